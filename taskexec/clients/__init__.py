"""HTTP clients of the router: the pools' internal client, the public Python SDK, keep-alive connections."""
