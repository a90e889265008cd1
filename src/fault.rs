//! Fault injection for the test suite, compiled only into debug builds:
//! `PYRS_INTERNAL_FAULT=KIND:ROUTE` makes requests to the route whose
//! pattern is ROUTE fail on purpose at one point of the serving path, so
//! that tests can check how the real binary contains the failure.
//!
//! - `panic_in_handler`: a panic in the Python bridge, right after the
//!   handler method returned (its result and request still alive): the
//!   event loop's per-job catch must answer 500 and the thread serve on.
//! - `panic_in_pull`: a panic in the Python bridge while a generator's next
//!   item is pulled: that stream fails (a 500 before its first item, else
//!   the response is cut) and the thread serves on.
//! - `panic_in_loop`: a panic in the event loop itself, after the handler
//!   call and outside any per-job catch: the pool thread dies, and the
//!   server must stop handing it connections and exit non-zero.
//!
//! The variable is read once, on first use. In release builds every hook is
//! an empty inline function: the binary holds neither the variable's name
//! nor the panics.

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    PanicInHandler,
    PanicInPull,
    PanicInLoop,
}

#[cfg(debug_assertions)]
mod armed {
    use super::Fault;
    use std::sync::OnceLock;

    pub const ENV: &str = "PYRS_INTERNAL_FAULT";

    static ARMED: OnceLock<Option<(Fault, String)>> = OnceLock::new();

    pub fn parse(value: &str) -> Option<(Fault, String)> {
        let (kind, route) = value.split_once(':')?;
        let kind = match kind {
            "panic_in_handler" => Fault::PanicInHandler,
            "panic_in_pull" => Fault::PanicInPull,
            "panic_in_loop" => Fault::PanicInLoop,
            _ => return None,
        };
        (!route.is_empty()).then(|| (kind, route.to_string()))
    }

    pub fn armed() -> Option<&'static (Fault, String)> {
        ARMED
            .get_or_init(|| {
                let value = std::env::var(ENV).ok()?;
                let parsed = parse(&value);
                match &parsed {
                    Some((kind, route)) => log::warn!("fault injection armed: {kind:?} on route {route}"),
                    None => {
                        log::warn!("{ENV}={value:?} ignored: expected panic_in_handler, panic_in_pull or panic_in_loop, then :ROUTE")
                    }
                }
                parsed
            })
            .as_ref()
    }
}

/// Reads the fault setting now (start-up), so that it is logged once.
#[inline(always)]
pub fn arm() {
    #[cfg(debug_assertions)]
    let _ = armed::armed();
}

/// Panics when `kind` is armed for the route with pattern `route`.
#[inline(always)]
pub fn hit(kind: Fault, route: &str) {
    #[cfg(debug_assertions)]
    if armed::armed().is_some_and(|(k, r)| *k == kind && r == route) {
        panic!("injected fault {kind:?} on route {route}");
    }
    #[cfg(not(debug_assertions))]
    let _ = (kind, route);
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::armed::parse;
    use super::Fault;

    #[test]
    fn parses_kind_and_route() {
        assert_eq!(parse("panic_in_handler:/boom"), Some((Fault::PanicInHandler, "/boom".to_string())));
        assert_eq!(parse("panic_in_loop:/x/{id}"), Some((Fault::PanicInLoop, "/x/{id}".to_string())));
        assert_eq!(parse("panic_in_pull:/s"), Some((Fault::PanicInPull, "/s".to_string())));
        assert_eq!(parse("panic_in_loop:"), None);
        assert_eq!(parse("explode:/boom"), None);
        assert_eq!(parse("/boom"), None);
    }
}
