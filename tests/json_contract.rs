//! One JSON contract with and without orjson: the same bytes for the same
//! value and the same errors. The server runs in target/test-venv (which has
//! orjson and numpy), once as is and once with a shim on PYTHONPATH that makes
//! `import orjson` fail.

mod common;
use common::*;
use std::path::PathBuf;

const API: &str = r#"
import dataclasses, datetime, decimal, enum, sys, uuid
import numpy as np
import pyrs

@dataclasses.dataclass
class Point:
    x: int
    y: float
    tags: list

    def __post_init__(self):
        self._hidden = 1

@dataclasses.dataclass(slots=True)
class Slotted:
    b: int
    a: str

class Color(enum.Enum):
    RED = "red"

class Level(enum.IntEnum):
    HIGH = 3

CASES = [
    {"int": 1, "big": 2**70, "neg_big": -2**64 - 1, "u64": 2**64 - 1,
     "f": [0.1, 1e20, 1e-7, 1e-5, 1e-6, -0.0, 1e16, 1e15, 5e-324, 1.7976931348623157e308, 1 / 3, 100.0]},
    {"dt": datetime.datetime(2024, 1, 2, 3, 4, 5, 123456),
     "dtz": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
     "ist": datetime.datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))),
     "d": datetime.date(2024, 1, 2), "t": datetime.time(3, 4, 5, 6)},
    {"u": uuid.UUID(int=1), "dec": decimal.Decimal("1.10"), "p": Point(1, 2.5, ["a"]), "s": Slotted(2, "x"),
     "e": Color.RED, "lvl": Level.HIGH},
    {"a64": np.array([[0.1, 2.0], [1e20, -0.0]]), "a32": np.array([0.1, 1e-6, 1e-7, 3.4e38], dtype=np.float32),
     "i16": np.array([1, -2, 3], dtype=np.int16), "u8": np.array([255], dtype=np.uint8), "b": np.array([True, False]),
     "scalars": [np.float32(0.1), np.float64(0.2), np.int64(7), np.uint64(2**64 - 1), np.bool_(True), np.float16(0.1), np.int8(-3)],
     "strided": np.arange(6)[::2], "zero_d": np.array(5), "f32_2d": np.ones((2, 2), dtype=np.float32) / 3,
     "dt64": np.datetime64("2024-01-01"), "empty": np.array([])},
    {2: "int", 1.5: "float", None: "none", False: "bool", datetime.date(2024, 1, 1): "date",
     uuid.UUID(int=2): "uuid", Level.HIGH: "intenum", 2**70: "big", 1e20: "big float"},
    {"s": "é\u2028\x7f\x1f\"\\/\n\t\x00", "none": None, "nested": [[[]], {}], "tuple": (1, (2, "x"))},
    [None, True, False, 0, -1, "", []],
]

class Api:
    def case(self, request):
        return CASES[int(request.params["n"])]

    def mode(self, request):
        return {"orjson": "orjson" in sys.modules, "dumps_equal": all(
            pyrs.dumps(c) == pyrs.dumps(c) for c in CASES)}

    def nan(self, request):
        return {"x": [1.0, float(request.query.get("v", "nan"))]}

    def unserializable(self, request):
        return {"x": {1, 2}}

    def bad_key(self, request):
        return {(1, 2): "tuple key"}

    def echo(self, request):
        return {"got": request.json()}

    def events(self, request):
        return pyrs.EventStream([{"data": {"s": "é", "f": [1e-7, 0.1], "n": 2**70}}])
"#;

const CASES: usize = 7;

fn venv() -> PathBuf {
    let v = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv");
    let ok = std::process::Command::new(v.join("bin/python"))
        .args(["-c", "import orjson, numpy"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "target/test-venv lacks orjson or numpy: run tests/setup.sh");
    v
}

/// Starts the project in the test virtualenv, with orjson importable or not.
fn start(with_orjson: bool) -> (Project, Server) {
    let pyrs = r#"{ "modules": [
        {"path": "/case/{n}", "module": "main", "class": "Api", "handler": "case"},
        {"path": "/mode", "module": "main", "class": "Api", "handler": "mode"},
        {"path": "/nan", "module": "main", "class": "Api", "handler": "nan"},
        {"path": "/unserializable", "module": "main", "class": "Api", "handler": "unserializable"},
        {"path": "/bad_key", "module": "main", "class": "Api", "handler": "bad_key"},
        {"path": "/echo", "module": "main", "class": "Api", "handler": "echo"},
        {"path": "/events", "module": "main", "class": "Api", "handler": "events"},
    ] }"#;
    let shim = "raise ImportError('orjson is hidden for this test')\n";
    let p = Project::new(&[("main.py", API), ("project.pyrs", pyrs), ("no_orjson/orjson/__init__.py", shim)]);
    let venv = venv();
    let hide = p.dir.join("no_orjson");
    let mut env = vec![];
    if !with_orjson {
        env.push(("PYTHONPATH", hide.to_str().unwrap()));
    }
    let s = Server::start_with(&p, &["--venv", venv.to_str().unwrap()], &env);
    (p, s)
}

fn bodies(s: &Server) -> Vec<Vec<u8>> {
    (0..CASES)
        .map(|n| {
            let r = s.get(&format!("/case/{n}"));
            assert_eq!(r.status, 200, "case {n}: {}\n{}", String::from_utf8_lossy(&r.body), s.stderr());
            assert_eq!(r.header("content-type"), Some("application/json"));
            r.body
        })
        .collect()
}

const EXPECTED: [&str; CASES] = [
    r#"{"int":1,"big":1180591620717411303424,"neg_big":-18446744073709551617,"u64":18446744073709551615,"f":[0.1,1e+20,1e-7,0.00001,1e-6,-0.0,1e+16,1000000000000000.0,5e-324,1.7976931348623157e+308,0.3333333333333333,100.0]}"#,
    r#"{"dt":"2024-01-02T03:04:05.123456","dtz":"2024-01-02T03:04:05+00:00","ist":"2024-01-02T03:04:05.000001+05:30","d":"2024-01-02","t":"03:04:05.000006"}"#,
    r#"{"u":"00000000-0000-0000-0000-000000000001","dec":"1.10","p":{"x":1,"y":2.5,"tags":["a"]},"s":{"b":2,"a":"x"},"e":"red","lvl":3}"#,
    r#"{"a64":[[0.1,2.0],[1e+20,-0.0]],"a32":[0.1,0.000001,1e-7,3.4e+38],"i16":[1,-2,3],"u8":[255],"b":[true,false],"scalars":[0.1,0.2,7,18446744073709551615,true,0.099975586,-3],"strided":[0,2,4],"zero_d":5,"f32_2d":[[0.33333334,0.33333334],[0.33333334,0.33333334]],"dt64":"2024-01-01T00:00:00","empty":[]}"#,
    r#"{"2":"int","1.5":"float","null":"none","false":"bool","2024-01-01":"date","00000000-0000-0000-0000-000000000002":"uuid","3":"intenum","1180591620717411303424":"big","1e+20":"big float"}"#,
    "{\"s\":\"é\u{2028}\u{7f}\\u001f\\\"\\\\/\\n\\t\\u0000\",\"none\":null,\"nested\":[[[]],{}],\"tuple\":[1,[2,\"x\"]]}",
    r#"[null,true,false,0,-1,"",[]]"#,
];

#[test]
fn same_bytes_with_and_without_orjson() {
    let (_p1, with) = start(true);
    let (_p2, without) = start(false);
    assert_eq!(with.get("/mode").text(), r#"{"orjson":true,"dumps_equal":true}"#);
    assert_eq!(without.get("/mode").text(), r#"{"orjson":false,"dumps_equal":true}"#);
    let a = bodies(&with);
    let b = bodies(&without);
    for n in 0..CASES {
        let (a, b) = (String::from_utf8_lossy(&a[n]), String::from_utf8_lossy(&b[n]));
        assert_eq!(a, b, "case {n}: with orjson vs without");
        assert_eq!(a, EXPECTED[n], "case {n}");
    }
    // EventStream's JSON data follows the same contract.
    for s in [&with, &without] {
        let mut c = s.connect();
        c.send(b"GET /events HTTP/1.0\r\n\r\n");
        let raw = String::from_utf8(c.read_to_close()).unwrap();
        assert!(
            raw.ends_with("\r\n\r\ndata: {\"s\":\"é\",\"f\":[1e-7,0.1],\"n\":1180591620717411303424}\n\n"),
            "{raw}"
        );
    }
}

#[test]
fn same_errors_with_and_without_orjson() {
    for with_orjson in [true, false] {
        let (_p, s) = start(with_orjson);
        for path in ["/nan", "/nan?v=inf", "/nan?v=-inf", "/unserializable", "/bad_key"] {
            let r = s.get(path);
            assert_eq!((r.status, r.text()), (500, "Internal Server Error\n".to_string()), "{path} {with_orjson}");
        }
        s.wait_stderr("ValueError: NaN is not valid JSON (NaN and infinities are refused)", 10);
        s.wait_stderr("ValueError: inf is not valid JSON", 10);
        s.wait_stderr("ValueError: -inf is not valid JSON", 10);
        s.wait_stderr("Type is not JSON serializable: builtins.set", 10);
        s.wait_stderr("Dict key must a type serializable with OPT_NON_STR_KEYS, not tuple", 10);
        // request.json(): exact big integers; NaN, Infinity and overflowing numbers refused.
        let r = s.post("/echo", b"{\"n\": 123456789012345678901234567890, \"f\": 1.5e300, \"u\": \"\\u00e9\"}");
        assert_eq!(r.text(), r#"{"got":{"n":123456789012345678901234567890,"f":1.5e+300,"u":"é"}}"#);
        for (body, why) in [
            (&b"{\"a\": NaN}"[..], "NaN is not valid JSON"),
            (b"[Infinity]", "Infinity is not valid JSON"),
            (b"[-Infinity]", "-Infinity is not valid JSON"),
            (b"[1e400]", "number 1e400 is out of range"),
            (b"{\"a\": 1", "Expecting ',' delimiter: line 1 column 8 (char 7)"),
            (b"\xff", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
        ] {
            let r = s.post("/echo", body);
            assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(body));
            assert_eq!(r.text(), format!("invalid JSON body: {why}\n"));
        }
    }
}
