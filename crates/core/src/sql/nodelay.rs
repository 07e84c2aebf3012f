//! sqlx opens its TCP connections without `TCP_NODELAY` and offers no option or socket access
//! to set it. Without it, a statement the kernel does not take in one write waits for the
//! server's delayed ACK (~40 ms on Linux). Right after sqlx connects, this sets `TCP_NODELAY`
//! on this process's TCP sockets whose peer is the database port. Setting it on another socket
//! to that port (another client library's) is harmless: Node's own sockets default to it.

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

#[cfg(not(target_os = "linux"))]
pub(crate) fn enable_towards(_port: u16) -> usize {
    0
}

#[cfg(target_os = "linux")]
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

#[cfg(target_os = "linux")]
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

/// The port a database URL connects to (`default` when it names none).
pub(crate) fn url_port(url: &str, default: u16) -> u16 {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or(default)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn sets_nodelay_on_sockets_to_the_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(!client.nodelay().unwrap());
        assert!(enable_towards(port) >= 1);
        assert!(client.nodelay().unwrap());
        assert_eq!(url_port("postgres://h:6543/db", 5432), 6543);
        assert_eq!(url_port("postgres://h/db", 5432), 5432);
    }
}
