"""The JSON HTTP transport (aiohttp): Dataiku API node compatible user API, health, status."""
