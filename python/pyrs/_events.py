# pyrs.EventStream. The server runs this very file (src/python/stream.rs includes it);
# the package imports it.
try:
    dumps  # type: ignore[used-before-def]  # noqa: B018 (pyrs.dumps, defined by the server)
except NameError:
    from pyrs._json import dumps

def _sse_lines(field, value):
    if isinstance(value, (bytes, bytearray)):
        # Bytes are text, as a bytes item is (not JSON, which has no bytes).
        value = bytes(value).decode('utf-8')
    text = value if isinstance(value, str) else dumps(value).decode('utf-8')
    lines = text.replace('\r\n', '\n').replace('\r', '\n').split('\n')
    return ''.join(f'{field}: {line}\n' for line in lines)

def _sse_event(item):
    if item is None:
        return ':\n\n'
    if isinstance(item, (bytes, bytearray)):
        item = bytes(item).decode('utf-8')
    if not isinstance(item, dict):
        return _sse_lines('data', item) + '\n'
    unknown = set(item) - {'data', 'event', 'id', 'retry', 'comment'}
    if unknown:
        raise ValueError(f'unknown event field(s) {sorted(unknown)}: use data, event, id, retry, comment')
    out = []
    if item.get('comment') is not None:
        out.append(_sse_lines('', item['comment']))
    for field in ('event', 'id'):
        value = item.get(field)
        if value is not None:
            value = str(value)
            if '\n' in value or '\r' in value or '\0' in value:
                raise ValueError(f'event {field} must not contain CR, LF or NUL')
            out.append(f'{field}: {value}\n')
    if item.get('retry') is not None:
        out.append(f"retry: {int(item['retry'])}\n")
    if item.get('data') is not None:
        out.append(_sse_lines('data', item['data']))
    return ''.join(out) + '\n'

class EventStream:
    """Server-Sent Events from an iterable, sent as text/event-stream with no buffering.

    Each item is a str or bytes (the event's data; newlines make several data: lines), any other
    JSON-serialisable value (sent as JSON data, by pyrs's JSON contract), a dict with any of 'data', 'event', 'id', 'retry'
    and 'comment', or None (a keep-alive comment line). retry= sends a reconnection delay first.
    """

    def __init__(self, events, retry=None):
        self.events = events
        self.retry = retry

    def __iter__(self):
        events = iter(self.events)
        try:
            if self.retry is not None:
                yield f'retry: {int(self.retry)}\n\n'
            for item in events:
                yield _sse_event(item)
        finally:
            close = getattr(events, 'close', None)
            if close is not None:
                close()

    async def _aevents(self):
        # The same events from an async iterable (pyrs streams it with __aiter__).
        events = self.events.__aiter__()
        try:
            if self.retry is not None:
                yield f'retry: {int(self.retry)}\n\n'
            async for item in events:
                yield _sse_event(item)
        finally:
            close = getattr(events, 'aclose', None)
            if close is not None:
                await close()

    def __repr__(self):
        return f'<pyrs.EventStream {self.events!r}>'
