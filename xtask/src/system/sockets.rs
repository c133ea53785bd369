//! Which TCP sockets listen on which ports, and whose (the user that
//! opened each), from the kernel's socket tables.

use std::collections::{BTreeMap, BTreeSet};

/// Listening TCP sockets (IPv4 and IPv6) on `ports`: inode -> (port, uid).
pub fn listening(ports: &BTreeSet<u16>) -> BTreeMap<u64, (u16, u32)> {
    // The kernel's socket tables through sock_diag; /proc/net/tcp says the
    // same, but reading it walks every bucket of the connection hash (ms).
    sock_diag::listening()
        .map(|all| all.into_iter().filter(|(_, (port, _))| ports.contains(port)).collect())
        .unwrap_or_else(|_| {
            let tables = ["/proc/net/tcp", "/proc/net/tcp6"].map(|t| std::fs::read_to_string(t).unwrap_or_default());
            tables.iter().flat_map(|t| proc_net_listening(t)).filter(|(_, (port, _))| ports.contains(port)).collect()
        })
}

/// The listening sockets of a `/proc/net/tcp` table: inode -> (port, uid).
/// A row: `sl local_address rem_address st ... uid timeout inode`, the port
/// in hex after the address, state `0A` for listening.
fn proc_net_listening(table: &str) -> BTreeMap<u64, (u16, u32)> {
    let row = |line: &str| {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let port = u16::from_str_radix(fields.get(1)?.rsplit_once(':')?.1, 16).ok()?;
        let listening = *fields.get(3)? == "0A";
        listening.then_some((fields.get(9)?.parse().ok()?, (port, fields.get(7)?.parse().ok()?)))
    };
    table.lines().skip(1).filter_map(row).collect()
}

/// The kernel's sock_diag netlink interface, asked for listening TCP sockets
/// only (linux/inet_diag.h).
mod sock_diag {
    use std::collections::BTreeMap;

    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST_DUMP: u16 = 0x1 | 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const HEADER: usize = 16; // struct nlmsghdr
    const MESSAGE: usize = 72; // struct inet_diag_msg
    const TCP_LISTEN: u32 = 10;
    const AF_INET: u8 = 2;
    const AF_INET6: u8 = 10;
    const IPPROTO_TCP: u8 = 6;

    /// inode -> (port, uid) of every listening TCP socket: one request per
    /// address family, on one socket, answered into one buffer.
    pub fn listening() -> std::io::Result<BTreeMap<u64, (u16, u32)>> {
        let mut found = BTreeMap::new();
        // Close-on-exec: a service started meanwhile by another thread must not keep it.
        let flags = SocketFlags::CLOEXEC;
        let fd = rustix::net::socket_with(AddressFamily::NETLINK, SocketType::RAW, flags, Some(netlink::SOCK_DIAG))?;
        let mut buffer = Vec::with_capacity(1 << 16);
        for family in [AF_INET, AF_INET6] {
            // nlmsghdr, then inet_diag_req_v2: family, protocol, ext, pad, states, an empty inet_diag_sockid.
            let mut request = Vec::with_capacity(HEADER + 56);
            request.extend_from_slice(&((HEADER + 56) as u32).to_ne_bytes());
            request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
            request.extend_from_slice(&NLM_F_REQUEST_DUMP.to_ne_bytes());
            request.extend_from_slice(&[0; 8]); // sequence, port id
            request.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
            request.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
            request.extend_from_slice(&[0; 48]);
            rustix::net::sendto(&fd, &request, SendFlags::empty(), &netlink::SocketAddrNetlink::new(0, 0))?;
            'answers: loop {
                let ((answer, _), _) = rustix::net::recv(&fd, buffer.spare_capacity_mut(), RecvFlags::empty())?;
                let mut rest: &[u8] = answer;
                if rest.is_empty() {
                    break;
                }
                while rest.len() >= HEADER {
                    let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                    let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                    if kind == NLMSG_DONE || kind == NLMSG_ERROR || len < HEADER || len > rest.len() {
                        if kind == NLMSG_ERROR {
                            return Err(std::io::Error::other("sock_diag refused the request"));
                        }
                        break 'answers;
                    }
                    if len >= HEADER + MESSAGE {
                        // inet_diag_msg: sport (big-endian) at 4, uid at 64, inode at 68.
                        let m = &rest[HEADER..len];
                        let port = u16::from_be_bytes([m[4], m[5]]);
                        let uid = u32::from_ne_bytes(m[64..68].try_into().unwrap());
                        let inode = u32::from_ne_bytes(m[68..72].try_into().unwrap());
                        found.insert(u64::from(inode), (port, uid));
                    }
                    rest = &rest[((len + 3) & !3).min(rest.len())..];
                }
            }
        }
        Ok(found)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn agrees_with_proc_net_tcp() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let ours = super::listening().unwrap();
            let from_proc = super::super::proc_net_listening(&std::fs::read_to_string("/proc/net/tcp").unwrap());
            let (inode, entry) = from_proc.iter().find(|(_, (p, _))| *p == port).unwrap();
            assert_eq!(ours.get(inode), Some(entry));
            assert_eq!(entry.1, crate::system::users::current_uid());
        }
    }
}
