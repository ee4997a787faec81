"""Admin HTTP API: the subset of the Dataiku API node's `/admin/api/...` that fits, so
`dataikuapi.APINodeAdminClient` can list services and generations, switch and set
mappings; plus `GET /admin/status`. Every route is behind :class:`~node.auth.AdminAuth`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from node import errors
from node.admin import AdminPlane
from node.auth import AdminAuth
from node.http.app import DATAPLANE, json_response
from node.http.body import loads_body
from node.keys import KeyManager

ADMIN = web.AppKey("admin", AdminPlane)
AUTH = web.AppKey("auth", AdminAuth)


KEYS = web.AppKey("keys", KeyManager)


def _authorise(request: web.Request) -> str | None:
    # The route's template, not its path: DELETE /admin/api/keys/{key} carries a key.
    route = request.match_info.route.resource
    what = f"{request.method} {route.canonical if route is not None else '?'}"
    return request.app[AUTH].check(request.headers.get("Authorization"), request.remote, what)


async def status(request: web.Request) -> web.Response:
    _authorise(request)
    return json_response(request.app[DATAPLANE].status())


async def list_services(request: web.Request) -> web.Response:
    _authorise(request)
    return json_response(
        [
            {"id": s["service"], "serviceId": s["service"], "enabled": s["enabled"], **s}
            for s in request.app[ADMIN].list_services()
        ]
    )


async def create_service(request: web.Request) -> web.Response:
    _authorise(request)
    body = loads_body(await request.read())
    sid = body.get("serviceId") or body.get("id")
    if not isinstance(sid, str) or not sid:
        raise errors.BadRequest("the body needs 'serviceId'")
    return json_response(request.app[ADMIN].create_service(sid))


async def delete_service(request: web.Request) -> web.Response:
    _authorise(request)
    await request.app[ADMIN].delete_service(request.match_info["service"])
    return json_response({"deleted": request.match_info["service"]})


async def list_generations(request: web.Request) -> web.Response:
    _authorise(request)
    state = request.app[ADMIN].service_state(request.match_info["service"])
    return json_response(
        {
            "generations": [g["generation"] for g in state["generations"]],
            "details": state["generations"],
        }
    )


async def import_archive(request: web.Request) -> web.Response:
    _authorise(request)
    path = request.query.get("filePath")
    if not path or not await asyncio.to_thread(Path(path).is_file):
        raise errors.BadRequest(f"filePath {path!r} is not a file on the node")
    result = await request.app[ADMIN].push(Path(path))
    return json_response({k: v for k, v in result.items() if k != "state"})


async def preload(request: web.Request) -> web.Response:
    _authorise(request)
    request.app[ADMIN].preload(request.match_info["service"], request.match_info["generation"])
    return json_response({"ok": True})


async def switch_to(request: web.Request) -> web.Response:
    _authorise(request)
    mi = request.match_info
    return json_response(await request.app[ADMIN].activate(mi["service"], mi["generation"]))


async def switch_to_newest(request: web.Request) -> web.Response:
    _authorise(request)
    return json_response(await request.app[ADMIN].activate_newest(request.match_info["service"]))


async def set_mapping(request: web.Request) -> web.Response:
    _authorise(request)
    body = loads_body(await request.read())
    mode = body.get("mode") or ("hash" if body.get("hashBased") else "random")
    mapping: dict[str, Any] = {"mode": mode, "entries": body.get("entries")}
    return json_response(await request.app[ADMIN].set_mapping(request.match_info["service"], mapping))


async def enable(request: web.Request) -> web.Response:
    _authorise(request)
    return json_response(await request.app[ADMIN].set_enabled(request.match_info["service"], True))


async def disable(request: web.Request) -> web.Response:
    _authorise(request)
    return json_response(await request.app[ADMIN].set_enabled(request.match_info["service"], False))


# ---- keys (dataikuapi.APINodeAdminClient.auth(): GET/POST keys, DELETE keys/{key}, keys/{id}/key) ----
async def list_admin_keys(request: web.Request) -> web.Response:
    _authorise(request)
    return json_response(request.app[KEYS].list_admin())


async def add_admin_key(request: web.Request) -> web.Response:
    by = _authorise(request)
    body = loads_body(await request.read())
    return json_response(request.app[KEYS].add_admin(body, by, request.remote))


async def delete_admin_key(request: web.Request) -> web.Response:
    by = _authorise(request)
    request.app[KEYS].delete_admin(None, request.match_info["key"], by, request.remote)
    return json_response({"deleted": True})


async def delete_admin_key_by_id(request: web.Request) -> web.Response:
    by = _authorise(request)
    request.app[KEYS].delete_admin(request.match_info["id"], None, by, request.remote)
    return json_response({"deleted": request.match_info["id"]})


async def list_service_keys(request: web.Request) -> web.Response:
    _authorise(request)
    return json_response(request.app[KEYS].list_service(request.match_info["service"]))


async def add_service_key(request: web.Request) -> web.Response:
    by = _authorise(request)
    body = loads_body(await request.read())
    return json_response(request.app[KEYS].add_service(request.match_info["service"], body, by, request.remote))


async def revoke_service_key(request: web.Request) -> web.Response:
    by = _authorise(request)
    mi = request.match_info
    request.app[KEYS].revoke_service(mi["service"], mi["id"], by, request.remote)
    return json_response({"revoked": mi["id"]})


def add_admin_routes(app: web.Application, admin: AdminPlane, auth: AdminAuth, keys: KeyManager) -> None:
    app[ADMIN] = admin
    app[AUTH] = auth
    app[KEYS] = keys
    r = app.router
    r.add_get("/admin/api/keys", list_admin_keys)
    r.add_post("/admin/api/keys", add_admin_key)
    r.add_delete("/admin/api/keys/{key}", delete_admin_key)
    r.add_delete("/admin/api/keys/{id}/key", delete_admin_key_by_id)
    r.add_get("/admin/status", status)
    base = "/admin/api/services"
    r.add_get(base, list_services)
    r.add_post(base + "/", create_service)
    r.add_post(base, create_service)
    r.add_delete(base + "/{service}", delete_service)
    r.add_get(base + "/{service}/generations", list_generations)
    r.add_post(base + "/{service}/generations/actions/importFromArchive", import_archive)
    r.add_post(base + "/{service}/generations/{generation}/preload", preload)
    r.add_post(base + "/{service}/actions/switchTo/{generation}", switch_to)
    r.add_post(base + "/{service}/actions/switchToNewest", switch_to_newest)
    r.add_post(base + "/{service}/actions/setMapping", set_mapping)
    r.add_post(base + "/{service}/actions/enable", enable)
    r.add_post(base + "/{service}/actions/disable", disable)
    r.add_get(base + "/{service}/keys", list_service_keys)
    r.add_post(base + "/{service}/keys", add_service_key)
    r.add_delete(base + "/{service}/keys/{id}", revoke_service_key)
