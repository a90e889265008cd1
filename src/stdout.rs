//! The start-up lines pyrs prints on stdout (routes, address, "Listening
//! on"). stdout may be a pipe whose reader went away (`pyrs app.pyrs | head
//! -1`): a failed write is dropped, never a panic, and serving goes on.

use std::io::Write;

/// Writes one line to stdout; any error (EPIPE, a closed descriptor) is ignored.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush());
}

/// `say!("fmt", args..)`: `println!` that never panics.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::stdout::line(&format!($($arg)*)) };
}
