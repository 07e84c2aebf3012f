//! sqlx opens its TCP connections without `TCP_NODELAY` and offers no option or socket access
//! to set it. Without it, a write the kernel does not send at once (Nagle: a small segment while
//! an earlier small one is unacknowledged) waits for the server's delayed ACK (~40 ms on Linux).
//! A TLS handshake hits this twice per connection: rustls writes its ChangeCipherSpec and its next
//! handshake record in two writes, and the Finished and the protocol's startup message in two
//! more. Measured on loopback against PostgreSQL (sslmode=prefer): ~90 ms per connection, of
//! which ~2 ms is TLS.
//!
//! So the socket must have `TCP_NODELAY` before the handshake, that is before sqlx's first
//! write. Two ways here:
//!
//! * [`__wrap_connect`]: the link of every artifact that runs this code (the addon, this crate's
//!   tests and examples; see the `build.rs` files) passes `--wrap=connect`, which routes this
//!   binary's calls of `connect(2)` (tokio's, under sqlx's) through it. For a TCP socket towards a
//!   port [`register`]ed as a database port it sets `TCP_NODELAY`, then connects: every
//!   connection the pool opens, now or when it grows later, has it before its first byte.
//! * [`enable_towards`]: the fallback of a build linked without the wrap. Right after sqlx
//!   connected (handshake done), it sets `TCP_NODELAY` on this process's TCP sockets whose peer is
//!   the database port. Setting it on another socket to that port (another client library's) is
//!   harmless: Node's own sockets default to it.
//!
//! Linux has both. macOS has only the fallback (through libproc's descriptor list); Windows has
//! neither: see [`enable_towards`] there for what its connections lose.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One bit per TCP port: the database ports [`__wrap_connect`] sets `TCP_NODELAY` towards.
static PORTS: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];
/// Whether [`__wrap_connect`] ever ran, i.e. this binary was linked with `--wrap=connect`.
static WRAPPED: AtomicBool = AtomicBool::new(false);

/// Marks `port` as a database port: connections to it get `TCP_NODELAY` before they connect.
pub(crate) fn register(port: u16) {
    PORTS[usize::from(port) / 64].fetch_or(1 << (port % 64), Ordering::Relaxed);
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn registered(port: u16) -> bool {
    PORTS[usize::from(port) / 64].load(Ordering::Relaxed) & (1 << (port % 64)) != 0
}

/// Whether connections get `TCP_NODELAY` before they connect (the binary has the wrap).
pub(crate) fn set_before_connect() -> bool {
    WRAPPED.load(Ordering::Relaxed)
}

/// `connect(2)` as this binary's code calls it when linked with `-Wl,--wrap=connect`: sets
/// `TCP_NODELAY` on an IPv4/IPv6 socket whose destination is a [`register`]ed port, then
/// connects (the system call itself, as glibc's `connect` makes it). Any other call is passed
/// through unchanged.
///
/// # Safety
/// The contract of `connect(2)`: `addr` points to `len` readable bytes (or is null, which the
/// kernel refuses).
#[cfg(target_os = "linux")]
#[no_mangle]
pub unsafe extern "C" fn __wrap_connect(
    fd: libc::c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> libc::c_int {
    WRAPPED.store(true, Ordering::Relaxed);
    // SAFETY: the address is read only within `len`, per the contract above.
    if let Some(port) = unsafe { destination_port(addr, len) } {
        if registered(port) {
            set_nodelay(fd);
        }
    }
    // SAFETY: the caller's arguments, unchanged, to the system call they were meant for.
    unsafe { libc::syscall(libc::SYS_connect, fd, addr, len) as libc::c_int }
}

/// The port of an `AF_INET`/`AF_INET6` socket address.
///
/// # Safety
/// `addr` is null or points to `len` readable bytes.
#[cfg(target_os = "linux")]
unsafe fn destination_port(addr: *const libc::sockaddr, len: libc::socklen_t) -> Option<u16> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sockaddr>() {
        return None;
    }
    // SAFETY: at least a `sockaddr` is readable; the longer forms are read only when `len`
    // covers them. Unaligned reads: the caller's buffer need not be aligned for them.
    unsafe {
        match i32::from((*addr).sa_family) {
            libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
                let a = std::ptr::read_unaligned(addr as *const libc::sockaddr_in);
                Some(u16::from_be(a.sin_port))
            }
            libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
                let a = std::ptr::read_unaligned(addr as *const libc::sockaddr_in6);
                Some(u16::from_be(a.sin6_port))
            }
            _ => None,
        }
    }
}

/// Sets `TCP_NODELAY` on every TCP socket of this process connected to `port`; returns how many.
#[cfg(target_os = "linux")]
pub(crate) fn enable_towards(port: u16) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut set = 0;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        match std::fs::read_link(entry.path()) {
            Ok(target) if target.to_string_lossy().starts_with("socket:") => {}
            _ => continue,
        }
        if peer_port(fd) == Some(port) && set_nodelay(fd) {
            set += 1;
        }
    }
    set
}

/// macOS: its linker has no `--wrap` and there is no `/proc`, so only the fallback, after the
/// handshake, over the descriptors libproc lists (`proc_pidinfo(PROC_PIDLISTFDS)`). A
/// connection's TLS handshake can still wait for delayed ACKs; what follows it does not.
#[cfg(target_os = "macos")]
pub(crate) fn enable_towards(port: u16) -> usize {
    const ENTRY: usize = std::mem::size_of::<libc::proc_fdinfo>();
    // SAFETY: getpid cannot fail; a null buffer asks proc_pidinfo for the size the list needs.
    let (pid, needed) = unsafe {
        let pid = libc::getpid();
        (
            pid,
            libc::proc_pidinfo(pid, libc::PROC_PIDLISTFDS, 0, std::ptr::null_mut(), 0),
        )
    };
    if needed <= 0 {
        return 0;
    }
    // room for descriptors opened in between
    let mut fds = vec![
        libc::proc_fdinfo {
            proc_fd: 0,
            proc_fdtype: 0
        };
        needed as usize / ENTRY + 16
    ];
    // SAFETY: proc_pidinfo writes at most the stated size into the buffer we own.
    let written = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDLISTFDS,
            0,
            fds.as_mut_ptr().cast(),
            (fds.len() * ENTRY) as libc::c_int,
        )
    };
    if written <= 0 {
        return 0;
    }
    fds.truncate(written as usize / ENTRY);
    fds.iter()
        .filter(|f| f.proc_fdtype == libc::PROX_FDTYPE_SOCKET as u32)
        .filter(|f| peer_port(f.proc_fd) == Some(port) && set_nodelay(f.proc_fd))
        .count()
}

/// Windows (and any other OS): sqlx's sockets cannot be reached, neither before connecting (no
/// wrap) nor after (no descriptor table to walk), so SQL connections keep Nagle on. What that
/// costs: a TLS handshake may wait for up to two delayed ACKs per new connection (Windows delays
/// an ACK up to 200 ms); a query, written in one piece and answered before the next, does not.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub(crate) fn enable_towards(_port: u16) -> usize {
    0
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn peer_port(fd: i32) -> Option<u16> {
    // SAFETY: getpeername writes at most `len` bytes into the zeroed storage we own; `fd` is only
    // inspected, and a closed or non-socket fd makes the call fail, which we treat as "no".
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len) != 0 {
            return None;
        }
        match addr.ss_family as i32 {
            libc::AF_INET => {
                let a = &*(&addr as *const _ as *const libc::sockaddr_in);
                Some(u16::from_be(a.sin_port))
            }
            libc::AF_INET6 => {
                let a = &*(&addr as *const _ as *const libc::sockaddr_in6);
                Some(u16::from_be(a.sin6_port))
            }
            _ => None,
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn set_nodelay(fd: i32) -> bool {
    let one: libc::c_int = 1;
    // SAFETY: passes a pointer to a live c_int of the stated size; failure is reported, not UB.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// `TCP_NODELAY` of each socket of this process whose peer is `port`.
    pub(super) fn nodelay_towards(port: u16) -> Vec<bool> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if peer_port(fd) != Some(port) {
                continue;
            }
            let mut on: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: writes at most `len` bytes into the c_int we own.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    &mut on as *mut _ as *mut libc::c_void,
                    &mut len,
                )
            };
            if r == 0 {
                out.push(on != 0);
            }
        }
        out
    }

    #[test]
    fn sets_nodelay_on_sockets_to_the_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(!client.nodelay().unwrap());
        assert!(enable_towards(port) >= 1);
        assert!(client.nodelay().unwrap());
    }

    #[test]
    fn registered_ports_get_nodelay_before_connecting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        register(port);
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(set_before_connect(), "not linked with --wrap=connect");
        assert!(client.nodelay().unwrap());
        // other ports are left alone
        let other = std::net::TcpListener::bind("[::1]:0").unwrap();
        let plain = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!plain.nodelay().unwrap());
    }
}

/// What the dialects' tests use to check their sockets get `TCP_NODELAY` early.
#[cfg(all(test, target_os = "linux"))]
pub(crate) mod testing {
    use super::tests::nodelay_towards;

    /// A server that, once the client's first message arrives (PostgreSQL's SSLRequest) or at
    /// once (MySQL: the server speaks first), reports whether the client's socket has
    /// `TCP_NODELAY`, then hangs up: the handshake has not begun yet. `connect` is the
    /// dialect's connect towards the port it is given (its tests call this).
    pub(crate) fn nodelay_before_handshake<F, Fut>(connect: F, client_speaks_first: bool) -> bool
    where
        F: FnOnce(u16) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            drop(listener);
            if client_speaks_first {
                let mut ssl_request = [0u8; 8];
                conn.read_exact(&mut ssl_request).unwrap();
            }
            nodelay_towards(port)
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // the server hangs up: the connect fails, which is all it has to do here
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), connect(port)).await;
        });
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        seen[0]
    }
}
