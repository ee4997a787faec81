"""The package format: the one contract between `compiler/` and `node/` (DESIGN.md).

A package (`.apz`) is a zip file with a versioned `manifest.json` (the README's "Package
format" section documents both). The modules, in dependency order:

    vocab       the format's constants (ids, types, policies), PackageError, path and digest checks
    sqlparams   the `:name` parameters of sql endpoints' statements
    specs       the typed manifest: Manifest, EndpointSpec and its parts (frozen, picklable)
    endpoints   one endpoint's manifest entry -> EndpointSpec
    manifest    manifest.json -> Manifest (service-wide parts; endpoints via `endpoints`)
    archive     write_package (compiler), read_manifest / extract_package / load_extracted (node)
    features    what a feature value means: the coercion both the node and the compiler's parity check use

Nothing here imports `node` or `compiler`; both import this.
"""
