//! Faults and abuse through the real binary: deep recursion in a handler,
//! a stderr nobody reads, tracebacks in a loop, stuck and panicking
//! handlers, a burst's memory going back to the OS.

mod common;
use common::*;

#[test]
fn deep_recursion_in_a_handler_has_pythons_main_thread_stack() {
    // 30,000 nested lists: plain Python (8 MiB main-thread stack) encodes
    // them once the recursion limit is raised; a 2 MiB pool thread overflowed
    // and aborted the process.
    let api = r#"
import json, sys
sys.setrecursionlimit(100000)

class Api:
    def deep(self, request):
        x = []
        for _ in range(30000):
            x = [x]
        return str(len(json.dumps(x)))

    def hello(self, request):
        return "world"
"#;
    let p = Project::simple(api, &[("/deep", "deep"), ("/hello", "hello")], "");
    let mut s = Server::start(&p, &[]);
    let r = s.get("/deep");
    assert_eq!((r.status, r.text()), (200, "60002".to_string()), "{}", s.stderr());
    assert_eq!(s.get("/hello").text(), "world");
    assert!(s.child.try_wait().unwrap().is_none(), "pyrs exited: {}", s.stderr());
}
