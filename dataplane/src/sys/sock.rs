//! Socket options BGP's transport security needs that no safe crate
//! exposes: TCP-MD5 signatures (RFC 2385, Linux `TCP_MD5SIG`), the
//! least TTL accepted (GTSM, RFC 5082, `IP_MINTTL`), the TTL sent
//! (`IP_TTL`, for sockets std cannot reach before connect) and the
//! saved SYN (`TCP_SAVE_SYN`, `TCP_SAVED_SYN`), whose TTL tells a
//! listener shared by several neighbours whether a connection came from
//! a neighbour within its hops. Linux only; no DPDK.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The longest TCP-MD5 key Linux takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY: usize = 80;

/// `struct tcp_md5sig` of `<linux/tcp.h>`: the peer as a
/// `sockaddr_storage`, then flags, prefix length, key length, interface
/// index (all but the key length ignored by plain `TCP_MD5SIG`), and the
/// key. Written out here because the `libc` crate does not define it.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY],
}

/// Sets an integer option.
fn set_int(
    fd: BorrowedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor for the borrow's life; the
    // kernel reads exactly `size_of::<c_int>()` bytes from `&v`, which
    // points at a live c_int, and keeps no reference to it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Signs (and requires signatures on) every segment to and from `peer`
/// with `key` (RFC 2385 section 2): on a listener, for the connections
/// it will accept from `peer` (each inherits the key); on a socket
/// about to connect, before `connect`, so that the SYN is signed. An
/// empty key removes `peer`'s. `peer` must be of the socket's family.
pub fn tcp_md5sig(fd: BorrowedFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a TCP-MD5 key is at most {MD5_MAX_KEY} bytes"),
        ));
    }
    // SAFETY: sockaddr_storage and the rest are plain integers and byte
    // arrays, for which all zeroes is a valid value.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    match peer {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(a).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for any
            // sockaddr, sockaddr_in included (its purpose in C).
            unsafe { std::ptr::write((&mut sig.addr as *mut libc::sockaddr_storage).cast(), sin) };
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as for sockaddr_in above.
            unsafe { std::ptr::write((&mut sig.addr as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: `fd` is open for the borrow's life; the kernel copies
    // `size_of::<TcpMd5Sig>()` bytes (the size of its own struct
    // tcp_md5sig, which it checks `optlen` against) from `&sig`, a live
    // value of that layout, reads the address family and `keylen` bytes
    // of the key (at most 80, checked above and again by the kernel) from
    // its copy, and keeps no reference to ours.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&sig as *const TcpMd5Sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The least TTL an IPv4 packet must arrive with for the socket to take
/// it (RFC 5082 section 3: 255 less the hops allowed, plus one); the
/// kernel drops the others and counts them (`TcpExtTCPMinTTLDrop`). On a
/// listener it applies to the SYNs too. 0 turns the check off.
pub fn ip_minttl(fd: BorrowedFd, ttl: u8) -> io::Result<()> {
    set_int(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MINTTL,
        libc::c_int::from(ttl),
    )
}

/// The TTL of the IPv4 packets the socket sends (RFC 5082 sends 255); on
/// a listener, its SYN-ACKs' and its accepted connections'.
pub fn ip_ttl(fd: BorrowedFd, ttl: u8) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_IP, libc::IP_TTL, libc::c_int::from(ttl))
}

/// Makes a listener keep each accepted connection's SYN (its IP and TCP
/// headers) for [`saved_syn_ttl`].
pub fn tcp_save_syn(fd: BorrowedFd) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_SAVE_SYN, 1)
}

/// The TTL the SYN of an accepted IPv4 connection arrived with, if its
/// listener saved it ([`tcp_save_syn`]); the kernel frees the saved SYN
/// once read, so this answers once. `Ok(None)`: nothing was saved.
pub fn saved_syn_ttl(fd: BorrowedFd) -> io::Result<Option<u8>> {
    // An IPv4 header with options (60) and a TCP header with options (60).
    let mut buf = [0u8; 120];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `fd` is open for the borrow's life; the kernel writes at
    // most `len` bytes (the buffer's size; if the SYN is longer it fails
    // with EINVAL and writes nothing but `len`) into `buf`, which lives
    // across the call, and stores the length written in `len`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SAVED_SYN,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // Byte 8 of an IPv4 header is the TTL (RFC 791 section 3.1).
    Ok(match &buf[..(len as usize).min(buf.len())] {
        [v, _, _, _, _, _, _, _, ttl, ..] if v >> 4 == 4 => Some(*ttl),
        _ => None,
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::time::Duration;

    /// A key on the listener for 127.0.0.1: a connection without one
    /// never completes (the kernel drops the unsigned SYN); one with the
    /// same key does and carries data; a key of 81 bytes is refused.
    #[test]
    fn md5_keys_must_match() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        tcp_md5sig(l.as_fd(), lo, b"s3cret").unwrap();
        assert!(tcp_md5sig(l.as_fd(), lo, &[b'x'; 81]).is_err());

        let unsigned = TcpStream::connect_timeout(&addr, Duration::from_millis(1500));
        assert!(unsigned.is_err(), "an unsigned SYN was answered");

        // std has no connect on an unconnected socket: a blocking one
        // through libc is more unsafe than a test needs, so the signed
        // side is a tokio TcpSocket.
        let rt = tokio_rt();
        rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            tcp_md5sig(s.as_fd(), lo, b"s3cret").unwrap();
            let mut c = s.connect(addr).await.unwrap().into_std().unwrap();
            c.set_nonblocking(false).unwrap();
            let (mut a, _) = l.accept().unwrap();
            c.write_all(b"hi").unwrap();
            let mut got = [0u8; 2];
            a.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"hi");
        });
    }

    /// The saved SYN gives the TTL the connection was opened with; a
    /// minimum TTL above what loopback traffic carries (64) stops it.
    #[test]
    fn saved_syn_shows_the_ttl_and_minttl_drops() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        tcp_save_syn(l.as_fd()).unwrap();
        ip_ttl(l.as_fd(), 255).unwrap();
        let rt = tokio_rt();
        let ttl_of = |ttl: u8| {
            rt.block_on(async {
                let s = tokio::net::TcpSocket::new_v4().unwrap();
                ip_ttl(s.as_fd(), ttl).unwrap();
                s.connect(addr).await.unwrap()
            });
            let (a, _) = l.accept().unwrap();
            let got = saved_syn_ttl(a.as_fd()).unwrap();
            assert_eq!(saved_syn_ttl(a.as_fd()).ok().flatten(), None, "once");
            got
        };
        assert_eq!(ttl_of(255), Some(255));
        assert_eq!(ttl_of(64), Some(64));

        ip_minttl(l.as_fd(), 254).unwrap();
        let low = TcpStream::connect_timeout(&addr, Duration::from_millis(1500));
        assert!(low.is_err(), "a SYN with TTL 64 was answered");
        assert_eq!(ttl_of(255), Some(255));
    }

    fn tokio_rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }
}
