//! Stopping a thread blocked in accept(2) at once. A worker that begins to
//! drain must stop taking connections from the socket it shares with the
//! other workers right away: a connection it accepted then would get one
//! response with `Connection: close`. The thread is sent SIGURG, whose
//! handler does nothing and is installed without SA_RESTART, so the
//! blocked accept returns EINTR and the thread sees its stop flag.
//! (SO_RCVTIMEO on the socket bounds the wait if a signal comes too early.)

use std::sync::Once;
use std::thread::JoinHandle;
use std::time::Duration;

static INSTALL: Once = Once::new();

extern "C" fn nothing(_: libc::c_int) {}

/// Installs the do-nothing SIGURG handler (once per process).
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that touches nothing;
        // sa_flags without SA_RESTART so blocking calls return EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut());
        }
    });
}

/// Interrupts `thread` (which must have seen its stop flag set) until it ends.
pub fn stop(thread: JoinHandle<()>) {
    use std::os::unix::thread::JoinHandleExt;
    let id = thread.as_pthread_t();
    while !thread.is_finished() {
        // SAFETY: the thread has not been joined, so its id is valid.
        unsafe { libc::pthread_kill(id, libc::SIGURG) };
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = thread.join();
}
