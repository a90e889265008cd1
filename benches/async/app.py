"""Handlers for benches/async: the same answer from a sync and an async def
handler, coroutines that sleep, and a sync handler that blocks 200 ms."""
import asyncio
import time


class Api:
    def hello(self, request):
        return "hello"

    async def ahello(self, request):
        return "hello"

    async def sleep(self, request):
        await asyncio.sleep(float(request.query.get("s", "0.5")))
        return "slept"

    def slow(self, request):
        time.sleep(0.2)
        return "slow"
