//! The proxy's listening sockets, which outlive any one proxy process.
//!
//! A connection to a listening socket that nobody accepts from waits in the
//! kernel's backlog; a connection to a port with no socket is refused. So
//! the sockets are made once and handed on: the process that starts the
//! proxy (`serve`, or systemd's socket unit) keeps copies and passes them to
//! each proxy it starts (inherited file descriptors, named as systemd names
//! them), and a running proxy hands copies to whoever asks over its control
//! socket (`SCM_RIGHTS`): a `serve` that restarted, or the next proxy
//! during an upgrade. A proxy that dies is started again on the same
//! sockets, and clients wait instead of being refused.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Names and count of the descriptors a parent passes, starting at fd 3.
pub const ENV_FDS: &str = "GANTRY_LISTEN_FDS";
pub const ENV_NAMES: &str = "GANTRY_LISTEN_FDNAMES";

/// The name of the plain HTTP listeners.
pub const HTTP: &str = "http";
/// The name of the HTTPS listeners.
pub const HTTPS: &str = "https";

/// The proxy's listening sockets, by name (`http`, `https`).
#[derive(Debug, Default)]
pub struct Listeners {
    pub sockets: Vec<(String, OwnedFd)>,
}

impl Listeners {
    /// `n` listeners on each address, with SO_REUSEPORT (one per worker;
    /// port 0 picks one port for all of an address's listeners).
    pub fn bind(http: SocketAddr, https: SocketAddr, n: usize) -> io::Result<Listeners> {
        let mut sockets = Vec::new();
        for (name, addr) in [(HTTP, http), (HTTPS, https)] {
            let mut bound = addr;
            for _ in 0..n.max(1) {
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(bound),
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                socket.set_reuse_address(true)?;
                socket.set_reuse_port(true)?;
                socket.bind(&bound.into())?;
                socket.listen(1024)?;
                if let Some(local) = socket.local_addr()?.as_socket() {
                    bound = local;
                }
                sockets.push((name.to_owned(), OwnedFd::from(socket)));
            }
        }
        Ok(Listeners { sockets })
    }

    /// The sockets a parent passed: gantry's own variables, or systemd's
    /// socket activation (`LISTEN_FDS`, `LISTEN_FDNAMES`, for this pid).
    /// `None` when nothing was passed. (The proxy starts no processes, so
    /// the variables can stay.)
    pub fn from_env() -> io::Result<Option<Listeners>> {
        let (count, names) = match std::env::var(ENV_FDS) {
            Ok(count) => (count, std::env::var(ENV_NAMES).unwrap_or_default()),
            Err(_) => {
                let Ok(count) = std::env::var("LISTEN_FDS") else {
                    return Ok(None);
                };
                let for_us = std::env::var("LISTEN_PID")
                    .ok()
                    .and_then(|p| p.parse::<u32>().ok())
                    == Some(std::process::id());
                if !for_us {
                    return Ok(None);
                }
                (count, std::env::var("LISTEN_FDNAMES").unwrap_or_default())
            }
        };
        let count: RawFd = count
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("{ENV_FDS} is not a number: {count:?}")))?;
        let names: Vec<&str> = names.split(':').collect();
        let mut sockets = Vec::new();
        for i in 0..count {
            let fd = 3 + i;
            let name = names.get(usize::try_from(i).unwrap_or(usize::MAX)).copied();
            let name = match name {
                Some(n) if !n.is_empty() => n.to_owned(),
                // systemd's default name is the unit's: guess by position.
                _ if i == 0 => HTTP.to_owned(),
                _ => HTTPS.to_owned(),
            };
            check_listening(fd)?;
            // SAFETY: the parent passed this descriptor to this process for
            // its own use, and it is a listening socket (checked above).
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            set_cloexec(owned.as_fd())?;
            sockets.push((name, owned));
        }
        Ok(Some(Listeners { sockets }))
    }

    /// Copies of every socket (another process gets them, these stay).
    pub fn try_clone(&self) -> io::Result<Listeners> {
        let sockets = self
            .sockets
            .iter()
            .map(|(name, fd)| Ok((name.clone(), fd.try_clone()?)))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Listeners { sockets })
    }

    /// The sockets named `name`.
    pub fn named(&self, name: &str) -> Vec<BorrowedFd<'_>> {
        self.sockets
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, fd)| fd.as_fd())
            .collect()
    }

    /// `n` listeners for `name`, one per worker: the sockets themselves, and
    /// copies of them when there are fewer than `n` (one socket accepted on
    /// by several workers, as systemd passes one per address).
    pub fn for_workers(&self, name: &str, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
        let own = self.named(name);
        if own.is_empty() {
            return Err(io::Error::other(format!("no {name} listener was passed")));
        }
        (0..n.max(own.len()))
            .map(|i| {
                let fd = own[i % own.len()].try_clone_to_owned()?;
                let listener = std::net::TcpListener::from(fd);
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .collect()
    }

    /// The address a name's sockets listen on.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        let fd = *self.named(name).first()?;
        let socket = socket2::SockRef::from(&fd);
        socket.local_addr().ok()?.as_socket()
    }

    /// The names in order, as `LISTEN_FDNAMES` lists them.
    pub fn names(&self) -> String {
        self.sockets
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(":")
    }
}

fn check_listening(fd: RawFd) -> io::Result<()> {
    // SAFETY: only borrowed for the check; ownership is taken by the caller.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&borrowed);
    match socket.is_listener() {
        Ok(true) => Ok(()),
        Ok(false) => Err(io::Error::other(format!(
            "fd {fd} was passed as a listener but is not listening"
        ))),
        Err(err) => Err(io::Error::other(format!(
            "fd {fd} was passed as a listener but is not a socket: {err}"
        ))),
    }
}

fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `data` with `fds` attached (`SCM_RIGHTS`) on a blocking stream.
pub fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let iov = [io::IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
        .map_err(io::Error::from)?;
    if sent < data.len() {
        // The descriptors went with the first part; the rest is plain data.
        std::io::Write::write_all(&mut &*stream, &data[sent..])?;
    }
    Ok(())
}

/// Reads one `\n`-terminated message and the descriptors that came with it.
pub fn recv_with_fds(stream: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut data = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 64]);
    while !data.ends_with(b"\n") {
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for fd in received {
                    // SAFETY: the kernel just installed this descriptor for us.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        let n = msg.bytes;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    Ok((data, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_travel_over_a_unix_socket_and_still_accept() {
        let listeners = Listeners::bind(
            "127.0.0.1:0".parse().expect("addr"),
            "127.0.0.1:0".parse().expect("addr"),
            1,
        )
        .expect("bind");
        assert_eq!(listeners.names(), "http:https");
        let http = listeners.local_addr(HTTP).expect("http addr");
        let (a, b) = UnixStream::pair().expect("pair");
        let fds: Vec<BorrowedFd<'_>> = listeners.sockets.iter().map(|(_, f)| f.as_fd()).collect();
        send_with_fds(&a, b"{\"ok\":true}\n", &fds).expect("send");
        let (data, received) = recv_with_fds(&b).expect("recv");
        assert_eq!(data, b"{\"ok\":true}\n");
        assert_eq!(received.len(), 2);
        // The sender lets go of its copies: the received ones keep the port.
        drop(listeners);
        let client = std::net::TcpStream::connect(http).expect("connect");
        let listener = std::net::TcpListener::from(received.into_iter().next().expect("fd"));
        let (accepted, _) = listener.accept().expect("accept");
        assert_eq!(
            accepted.peer_addr().expect("peer"),
            client.local_addr().expect("local")
        );
    }
}
