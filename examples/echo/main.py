"""The echo example: the smallest pyrs project, and the wrk benchmark target."""


class Api:
    def echo(self, request):
        # bytes in, bytes out: the body comes back unchanged.
        return request.body

    def hello(self, request):
        return "world"

    def default(self, request):
        return ("pyrs echo example: try POST /echo or GET /hello\n", 404)
