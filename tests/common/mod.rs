//! Test harness: real project directories, the real `pyrs` binary on an
//! ephemeral 127.0.0.1 port, and a raw HTTP/1.1 client over TCP.
//!
//! Made for a loaded machine: every wait polls a condition against a
//! generous deadline (a deadline only decides when a test gives up, never
//! what it asserts), and every socket call retries `EINTR` (a blocking call
//! with a timeout returns it after the process was stopped and continued,
//! even without signal handlers).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a client waits for a response before the test fails.
pub const RESPONSE_WAIT: Duration = Duration::from_secs(30);

/// A wait of `secs` stretched for a loaded machine: conditions are polled, so
/// a longer deadline costs nothing when all is well.
pub fn generous(secs: u64) -> Duration {
    Duration::from_secs(secs.max(30))
}

/// Polls `f` every 10 ms until it is true; panics with `what` after `secs` (stretched by [`generous`]).
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + generous(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects, retrying `EINTR`.
pub fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    loop {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Connects with a receive buffer of `bytes` (set before connecting, so the
/// window stays small): what the client does not read piles up in the
/// server, not in loopback socket buffers that autotuning may grow to
/// megabytes. Retries `EINTR`.
pub fn connect_with_small_window(addr: SocketAddr, bytes: usize) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(bytes).unwrap();
    loop {
        match sock.connect(&addr.into()) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // An interrupted connect may have completed meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::EISCONN) => break,
            r => break r.unwrap(),
        }
    }
    sock.into()
}

/// One read, retrying `EINTR`.
pub fn read_retry(stream: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

pub const BIN: &str = env!("CARGO_BIN_EXE_pyrs");

/// A project directory with handler files and a project.pyrs.
pub struct Project {
    pub dir: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Project {
    /// `files`: (relative path, contents); one of them should be `project.pyrs`.
    pub fn new(files: &[(&str, &str)]) -> Project {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("proj-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Project { dir }
    }

    /// A project whose `main.py` is `source` and whose routes are
    /// (path, handler) pairs on class `Api`; `extra` is inserted as more keys.
    pub fn simple(source: &str, routes: &[(&str, &str)], extra: &str) -> Project {
        let routes: Vec<String> = routes
            .iter()
            .map(|(p, h)| format!(r#"{{"path": "{p}", "module": "main", "class": "Api", "handler": "{h}"}}"#))
            .collect();
        let pyrs = format!("{{\n{extra}\n\"modules\": [{}]\n}}\n", routes.join(",\n"));
        Project::new(&[("main.py", source), ("project.pyrs", &pyrs)])
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join("project.pyrs")
    }
}

/// A running `pyrs`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    /// The threads copying stdout and stderr; they end at EOF.
    readers: Vec<std::thread::JoinHandle<()>>,
    /// stderr when the test keeps it unread (a full pipe nobody drains).
    pub unread_stderr: Option<std::process::ChildStderr>,
}

fn collect(stream: impl Read + Send + 'static, sink: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut line = Vec::new();
        // read_until retries EINTR; invalid UTF-8 is kept (lossily) rather than ending the copy.
        while r.read_until(b'\n', &mut line).map(|n| n > 0).unwrap_or(false) {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    })
}

impl Server {
    /// Starts `pyrs PROJECT --bind 127.0.0.1:0 ARGS` and waits for "Listening on".
    pub fn start(project: &Project, args: &[&str]) -> Server {
        Self::start_with(project, args, &[])
    }

    pub fn start_with(project: &Project, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg(project.file()).args(["--bind", "127.0.0.1:0"]).args(args);
        cmd.env_remove("VIRTUAL_ENV");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd)
    }

    /// Runs `cmd` (which must end up exec'ing pyrs with `--bind 127.0.0.1:0`)
    /// and waits for "Listening on".
    pub fn spawn(cmd: Command) -> Server {
        Self::spawn_with(cmd, true)
    }

    /// Like [`Server::spawn`]; with `read_stderr` false, stderr is a pipe
    /// nobody reads (kept in `unread_stderr`), which fills after 64 KiB.
    pub fn spawn_with(cmd: Command, read_stderr: bool) -> Server {
        let mut s = Self::launch_with(cmd, read_stderr);
        s.wait_listening();
        s
    }

    /// Starts `cmd` without waiting for it to listen: the handle is owned
    /// by the caller from the start, so that whatever panics next (a check
    /// made while pyrs loads), dropping it kills the server. Then
    /// [`Server::wait_listening`] (which sets `addr`).
    pub fn launch(cmd: Command) -> Server {
        Self::launch_with(cmd, true)
    }

    /// The process gets a process group of its own: dropping the `Server`
    /// kills the whole group (a master's template and workers too). It also
    /// gets SIGKILL when the thread that launched it ends (`PR_SET_PDEATHSIG`;
    /// the test process exiting or being killed ends every thread), so no
    /// pyrs outlives its test even when no destructor runs: launch it on the
    /// thread that owns it, never on a helper thread that ends first.
    pub fn launch_with(mut cmd: Command, read_stderr: bool) -> Server {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pyrs");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = vec![collect(child.stdout.take().unwrap(), stdout.clone())];
        let mut unread_stderr = None;
        if read_stderr {
            readers.push(collect(child.stderr.take().unwrap(), stderr.clone()));
        } else {
            unread_stderr = child.stderr.take();
        }
        register_group(child.id() as libc::pid_t);
        let addr = "0.0.0.0:0".parse().unwrap();
        Server { child, addr, stdout, stderr, readers, unread_stderr }
    }

    /// Waits for "Listening on" and sets `addr` (0.0.0.0:0 for a server
    /// with only Unix or inherited sockets); panics, killing the server on
    /// the way out, if pyrs exits first or takes over 60 s.
    pub fn wait_listening(&mut self) {
        if let Err(why) = self.try_wait_listening() {
            panic!("{why}");
        }
    }

    /// Like [`Server::wait_listening`], but a pyrs that exits before it
    /// listens is an `Err` saying so, with its output (the caller may retry,
    /// e.g. when the address was in use); only the 60 s deadline panics.
    pub fn try_wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.stdout();
            if let Some(rest) = out.split("Listening on http://").nth(1) {
                if let Some(line) = rest.split_once('\n').map(|(l, _)| l) {
                    self.addr = line.trim().parse().unwrap();
                    return Ok(());
                }
            }
            // A server with only Unix sockets (or inherited ones): no TCP address to give.
            if out.contains("Listening on unix:") && !out.contains("Listening on http://") {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Its last words, once the pipes are drained.
                let drained = Instant::now() + Duration::from_secs(10);
                while !self.readers.iter().all(|r| r.is_finished()) && Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Err(format!(
                    "pyrs exited with {status} before listening\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "pyrs did not start listening in 60 s\nstdout:\n{out}\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts `cmd` like [`Server::spawn`]; `Err` (pyrs's output) when it
    /// exits before listening.
    pub fn try_spawn(cmd: Command) -> Result<Server, String> {
        let mut s = Self::launch(cmd);
        s.try_wait_listening().map(|()| s)
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a new connection; returns the response.
    pub fn request(&self, raw: &str) -> Response {
        let mut c = self.connect();
        c.send(raw.as_bytes());
        c.read_response()
    }

    pub fn get(&self, path: &str) -> Response {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"))
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        let mut c = self.connect();
        c.send(format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        c.send(body);
        c.read_response()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle` (panics after `secs`, stretched by [`generous`]).
    pub fn wait_stderr(&self, needle: &str, secs: u64) {
        let deadline = Instant::now() + generous(secs);
        while !self.stderr().contains(needle) {
            assert!(Instant::now() < deadline, "stderr never contained {needle:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until stdout contains `needle` `count` times (handlers print
    /// markers to say where they are; panics after `secs`, stretched).
    pub fn wait_stdout(&self, needle: &str, count: usize, secs: u64) {
        let deadline = Instant::now() + generous(secs);
        while self.stdout().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "stdout never contained {needle:?} {count} times:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for exit (panics after `secs`, stretched by [`generous`]), then
    /// for the output copied so far (the pipes' EOF, unless a child process
    /// that outlived pyrs still holds them).
    pub fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + generous(secs);
        loop {
            if let Some(s) = self.child.try_wait().expect("waitpid") {
                let drained = Instant::now() + Duration::from_secs(10);
                while !self.readers.iter().all(|r| r.is_finished()) && Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return s;
            }
            assert!(Instant::now() < deadline, "pyrs did not exit within {secs} s; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The group, not only the pid: a worker-mode master killed alone
        // leaves its template and workers to notice by themselves.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions; the group is the
        // one this child leads (see launch_with).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(mut live) = LIVE_GROUPS.lock() {
            live.retain(|&g| g != pgid);
        }
    }
}

/// The process groups of `Server`s not dropped yet: killed when the test
/// process exits (the harness exits while a failed test's detached threads
/// may still own one), whoever owns them.
static LIVE_GROUPS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

fn register_group(pgid: libc::pid_t) {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: registers a function that only calls kill(2).
        unsafe { libc::atexit(kill_live_groups) };
    });
    LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner()).push(pgid);
}

extern "C" fn kill_live_groups() {
    // try_lock: a thread that held the lock when exit began never gives it back.
    if let Ok(live) = LIVE_GROUPS.try_lock() {
        for &pgid in live.iter() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// Live (not zombie) processes started by the worker-mode master `master`:
/// its templates and workers carry its pid in their environment.
pub fn processes_of_master(master: u32) -> Vec<u32> {
    let needle = format!("PYRS_INTERNAL_MASTER_PID={master}\0");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state follows the command name's closing parenthesis.
            let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
            !zombie && environ.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .collect()
}

/// A listening TCP socket on 127.0.0.1 (an ephemeral port the kernel picks,
/// so no other process can take it first), handed to the pyrs `cmd` starts on
/// descriptor `fd` (`--fd N`); its address. The test's own copy stays open
/// until the test process ends, so the port stays reserved between servers.
pub fn pass_listener(cmd: &mut Command, fd: i32) -> SocketAddr {
    use std::os::fd::IntoRawFd;
    use std::os::unix::process::CommandExt;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let raw = l.into_raw_fd();
    // SAFETY: dup2 between fork and exec; the parent's copy stays open until the test ends.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear it instead.
            let rc = if raw == fd { libc::fcntl(fd, libc::F_SETFD, 0) } else { libc::dup2(raw, fd) };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    addr
}

/// Runs `pyrs ARGS` to completion: (exit code, stdout, stderr).
pub fn run_pyrs(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("VIRTUAL_ENV");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run pyrs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("body is not UTF-8")
    }
}

/// A raw HTTP/1.1 client: write any bytes, read responses framed by Content-Length.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Responses to HEAD requests have no body; set before reading one.
    pub head_request: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = connect(addr).expect("connect");
        stream.set_read_timeout(Some(RESPONSE_WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, buf: Vec::new(), head_request: false }
    }

    /// A client over an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        Client { stream, buf: Vec::new(), head_request: false }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        match read_retry(&mut self.stream, &mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!(
                    "no data from the server within the read timeout (have {:?})",
                    String::from_utf8_lossy(&self.buf)
                )
            }
            Err(e) => panic!("read failed: {e} (have {:?})", String::from_utf8_lossy(&self.buf)),
        }
    }

    /// Reads one response (panics on timeout or a malformed response).
    pub fn read_response(&mut self) -> Response {
        self.try_read_response().unwrap_or_else(|| {
            panic!("connection closed before a response; got {:?}", String::from_utf8_lossy(&self.buf))
        })
    }

    /// Reads one response, or None if the server closed first.
    pub fn try_read_response(&mut self) -> Option<Response> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill() == 0 {
                return None;
            }
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("response head is not UTF-8");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {status_line:?}");
        let status: u16 = parts.next().unwrap().parse().unwrap();
        let reason = parts.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap_or_else(|| panic!("bad header line {l:?}"));
                (n.to_string(), v.to_string())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let len = if self.head_request || status < 200 || status == 204 || status == 304 { 0 } else { len };
        while self.buf.len() < head_end + len {
            if self.fill() == 0 {
                panic!("connection closed mid-body");
            }
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Some(Response { status, reason, headers, body })
    }

    /// True when the server closes the connection (EOF) without sending
    /// more (panics if it does neither within the response wait).
    pub fn is_closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }

    /// Shuts down the sending side (FIN): the server sees the end of the
    /// requests, and can still answer them.
    pub fn half_close(&mut self) {
        self.stream.shutdown(std::net::Shutdown::Write).expect("shutdown(Write)");
    }

    /// Closes with a reset (SO_LINGER 0): the server's next read or write
    /// fails, as when a client goes away (a FIN alone ends only its requests).
    pub fn reset(self) {
        socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
    }

    /// Everything until the server closes.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill() > 0 {}
        std::mem::take(&mut self.buf)
    }
}

/// One request over a Unix socket (send `Connection: close`): the response,
/// or None when the connection fails or closes without one.
pub fn unix_request(path: &Path, raw: &str) -> Option<Response> {
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(raw.as_bytes()).ok()?;
    let mut bytes = Vec::new();
    loop {
        let mut chunk = [0u8; 65536];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    parse_response(&bytes)
}

/// A complete response in `bytes` (framed by Content-Length).
pub fn parse_response(bytes: &[u8]) -> Option<Response> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.splitn(3, ' ');
    let _version = status_line.next()?;
    let status: u16 = status_line.next()?.parse().ok()?;
    let reason = status_line.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(": ")).map(|(n, v)| (n.to_string(), v.to_string())).collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body = bytes.get(head_end..head_end + len)?.to_vec();
    Some(Response { status, reason, headers, body })
}

/// Everything the server sent until it closed, with each `Date` value
/// masked as `X` and each `X-Request-Id` value as `R`; and the request ids.
pub fn exchange_masked(s: &Server, raw: &str) -> (String, Vec<String>) {
    let mut c = s.connect();
    c.send(raw.as_bytes());
    masked(&c.read_to_close())
}

/// `bytes` as text with each `Date` value masked as `X` and each
/// `X-Request-Id` value as `R`; and the request ids.
pub fn masked(bytes: &[u8]) -> (String, Vec<String>) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut rids = Vec::new();
    let masked: Vec<String> = text
        .split("\r\n")
        .map(|l| {
            if l.starts_with("Date: ") {
                "Date: X".to_string()
            } else if let Some(rid) = l.strip_prefix("X-Request-Id: ") {
                rids.push(rid.to_string());
                "X-Request-Id: R".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    (masked.join("\r\n"), rids)
}

/// Waits until `f` holds (panics after `secs`), polling every 20 ms.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh directory under the test target dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
