"""`:name` parameters found the way the database reads SQL, rewritten for each driver."""

from __future__ import annotations

import sqlite3

import pytest

from apz.sqlparams import SqlTextError, parse, postgres, sqlite


def pg(sql: str) -> tuple[str, tuple[str, ...]]:
    s = parse(sql)
    return s.render(postgres), s.names


def test_names_numbered_in_order_of_first_use_and_reused() -> None:
    assert pg("SELECT * FROM t WHERE a = :a AND b = :b OR a2 = :a") == (
        "SELECT * FROM t WHERE a = $1 AND b = $2 OR a2 = $1",
        ("a", "b"),
    )
    s = parse("UPDATE t SET x = :x_1 WHERE id=:id;")
    assert s.render(sqlite) == "UPDATE t SET x = ?1 WHERE id=?2;"
    assert s.args({"id": 7, "x_1": "v", "extra": 0}) == ["v", 7]


def test_literals_identifiers_and_comments_are_not_parameters() -> None:
    sql = """SELECT ':no', 'it''s :no', E'\\' :no', "col:no", `x:no`, $$ :no $$, $t$ :no $t$ -- :no
    /* :no /* nested :no */ :no */ FROM t WHERE a = :yes"""
    rendered, names = pg(sql)
    assert names == ("yes",)
    assert rendered.endswith("WHERE a = $1") and ":no" in rendered


def test_postgres_casts_and_slices() -> None:
    assert pg("SELECT :v::int, x::text, arr[1:2] FROM t") == ("SELECT $1::int, x::text, arr[1:2] FROM t", ("v",))
    assert pg("SELECT :v ::numeric(10, 2)") == ("SELECT $1 ::numeric(10, 2)", ("v",))


def test_not_names() -> None:
    # a colon before a digit or a space, an identifier with $ inside, a lone $
    assert pg("SELECT a : b, '12:30', x$y, $1z FROM t WHERE c = :_c9")[1] == ("_c9",)
    assert parse("SELECT 1").names == ()


def test_escaped_quote_in_standard_string_is_not_a_backslash_escape() -> None:
    # in a standard string a backslash is a plain character: the literal ends at the quote
    assert pg("SELECT 'a\\' , :p")[1] == ("p",)
    # ...while in E'' strings it escapes: the literal goes on
    assert pg("SELECT E'a\\' , :p'")[1] == ()
    # `type'...'` is not an E string
    assert pg("SELECT date'2024-01-01', :p")[1] == ("p",)


@pytest.mark.parametrize("bad", ["SELECT 'open", 'SELECT "open', "SELECT /* open", "SELECT $a$ open $b$"])
def test_unterminated(bad: str) -> None:
    with pytest.raises(SqlTextError, match="unterminated"):
        parse(bad)


def test_rendered_sqlite_binds_values_never_formats_them() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id INTEGER, name TEXT)")
    db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    s = parse("SELECT name FROM t WHERE id = :id OR name = :id -- ':id'")
    assert db.execute(s.render(sqlite), s.args({"id": 2})).fetchall() == [("b",)]
    assert db.execute(s.render(sqlite), s.args({"id": "1; DROP TABLE t"})).fetchall() == []
    assert db.execute("SELECT count(*) FROM t").fetchone() == (2,)
