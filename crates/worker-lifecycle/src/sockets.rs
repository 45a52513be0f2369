//! Which TCP sockets listen on a port, and whether a worker's process group holds the one
//! that accepts its connections (the readiness proof): the kernel's `sock_diag`
//! netlink interface, asked for listening sockets only (it then walks the listening table
//! alone, microseconds), with `/proc/net/tcp{,6}` as the fallback (which walks every
//! socket table: milliseconds on a busy or large machine).
//!
//! Only the sockets that would accept a connection to `127.0.0.1:port` count, ranked as the
//! kernel chooses among them: bound to 127.0.0.1 before bound to the wildcard, IPv4 before
//! IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::procinfo::{all_pids, holder_of_socket, holds_socket, stat_fields};
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u32 = 10;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HEADER: usize = 16;
const INET_DIAG_MSG: usize = 72;

/// The inodes of the listening sockets that the kernel would hand a connection to
/// `127.0.0.1:port`: the best-ranked kind present, all of them if several share it
/// (`SO_REUSEPORT`).
pub(crate) fn accepting_listeners(port: u16) -> Vec<u64> {
    let found = match listeners_by_netlink(port) {
        Ok(found) => found,
        Err(error) => {
            tracing::debug!("sock_diag unavailable ({error}); reading /proc/net/tcp");
            listeners_by_proc(port)
        }
    };
    let Some(best) = found.iter().map(|(rank, _)| *rank).min() else {
        return Vec::new();
    };
    found
        .into_iter()
        .filter(|(rank, _)| *rank == best)
        .map(|(_, inode)| inode)
        .collect()
}

/// How the kernel ranks a listener for a connection to 127.0.0.1 (0 first); `None` for an
/// address that does not accept it.
fn rank(address: &[u8]) -> Option<u8> {
    match address.len() {
        4 => match Ipv4Addr::new(address[0], address[1], address[2], address[3]) {
            Ipv4Addr::LOCALHOST => Some(0),
            Ipv4Addr::UNSPECIFIED => Some(2),
            _ => None,
        },
        16 => {
            let octets: [u8; 16] = address.try_into().ok()?;
            let ip = Ipv6Addr::from(octets);
            if ip.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST) {
                Some(1)
            } else if ip.is_unspecified() {
                Some(3)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// `(rank, inode)` of the TCP listeners on `port`, from `sock_diag`.
fn listeners_by_netlink(port: u16) -> std::io::Result<Vec<(u8, u64)>> {
    let socket = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    let kernel = SocketAddrNetlink::new(0, 0);
    let mut found = Vec::new();
    for family in [AF_INET, AF_INET6] {
        rustix::net::sendto(&socket, &dump_request(family), SendFlags::empty(), &kernel)?;
        let mut buffer = vec![0u8; 32 * 1024];
        'dump: loop {
            let (received, _) = rustix::net::recv(&socket, &mut buffer[..], RecvFlags::empty())?;
            let mut messages = &buffer[..received];
            while messages.len() >= NLMSG_HEADER {
                let length =
                    u32::from_ne_bytes(messages[0..4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes(messages[4..6].try_into().unwrap_or_default());
                if length < NLMSG_HEADER || length > messages.len() {
                    return Err(std::io::Error::other("a malformed sock_diag answer"));
                }
                match kind {
                    NLMSG_DONE => break 'dump,
                    NLMSG_ERROR => {
                        return Err(std::io::Error::other("sock_diag answered an error"));
                    }
                    _ => {
                        if let Some(listener) = parse_diag(&messages[NLMSG_HEADER..length], port) {
                            found.push(listener);
                        }
                    }
                }
                messages = &messages[length.next_multiple_of(4).min(messages.len())..];
            }
        }
    }
    Ok(found)
}

/// A dump request for the listening TCP sockets of one address family.
fn dump_request(family: u8) -> Vec<u8> {
    let mut request = Vec::with_capacity(NLMSG_HEADER + 56);
    request.extend_from_slice(&((NLMSG_HEADER + 56) as u32).to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    // struct inet_diag_req_v2: family, protocol, extensions, padding, states, then an
    // inet_diag_sockid (48 bytes) that a dump without a filter ignores.
    request.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    request.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    request.extend_from_slice(&[0u8; 48]);
    request
}

/// `(rank, inode)` from one `struct inet_diag_msg`, if it listens on `port` where
/// 127.0.0.1 reaches it.
fn parse_diag(message: &[u8], port: u16) -> Option<(u8, u64)> {
    if message.len() < INET_DIAG_MSG {
        return None;
    }
    let family = message[0];
    let local_port = u16::from_be_bytes([message[4], message[5]]);
    if local_port != port || u32::from(message[1]) != TCP_LISTEN {
        return None;
    }
    let address = match family {
        AF_INET => &message[8..12],
        AF_INET6 => &message[8..24],
        _ => return None,
    };
    let inode = u32::from_ne_bytes(message[68..72].try_into().ok()?);
    Some((rank(address)?, u64::from(inode)))
}

/// `(rank, inode)` of the TCP listeners on `port`, from `/proc/net/tcp{,6}` (the `procfs`
/// crate's parser).
fn listeners_by_proc(port: u16) -> Vec<(u8, u64)> {
    let tables = [procfs::net::tcp(), procfs::net::tcp6()];
    tables
        .into_iter()
        .flat_map(Result::unwrap_or_default)
        .filter(|entry| {
            entry.state == procfs::net::TcpState::Listen && entry.local_address.port() == port
        })
        .filter_map(|entry| {
            let rank = match entry.local_address.ip() {
                IpAddr::V4(ip) => rank(&ip.octets()),
                IpAddr::V6(ip) => rank(&ip.octets()),
            }?;
            Some((rank, entry.inode))
        })
        .collect()
}

/// Whether the socket that accepts connections to `127.0.0.1:port` is held by a process of
/// group `pgid`. `Err` says who holds it instead (or that nobody listens).
pub(crate) fn listener_is_held_by_group(port: u16, pgid: u32) -> Result<(), String> {
    let listeners = accepting_listeners(port);
    if listeners.is_empty() {
        return Err(format!("no socket listens on port {port}"));
    }
    // The leader holds the socket in the common case; the rest of the group is scanned only
    // when it does not.
    let mut missing: Vec<u64> = listeners
        .into_iter()
        .filter(|inode| !holds_socket(pgid, *inode))
        .collect();
    if !missing.is_empty() {
        let members: Vec<u32> = all_pids()
            .filter(|pid| {
                *pid != pgid && stat_fields(*pid).is_some_and(|f| f.pgid == pgid && !f.zombie)
            })
            .collect();
        missing.retain(|inode| !members.iter().any(|pid| holds_socket(*pid, *inode)));
    }
    match missing.first() {
        None => Ok(()),
        Some(inode) => Err(match holder_of_socket(*inode) {
            Some((pid, name)) => format!(
                "port {port} is held by pid {pid} ({name}), which is not a process of this worker"
            ),
            None => format!(
                "port {port} is held by a process this hive cannot see (another user's), not by this worker"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_and_proc_agree_on_a_real_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let by_proc = listeners_by_proc(port);
        assert_eq!(by_proc.len(), 1, "{by_proc:?}");
        assert_eq!(by_proc[0].0, 0);
        match listeners_by_netlink(port) {
            Ok(by_netlink) => assert_eq!(by_netlink, by_proc),
            // Some sandboxes refuse netlink sockets; the hive then reads /proc.
            Err(error) => eprintln!("sock_diag unavailable here: {error}"),
        }
        assert_eq!(accepting_listeners(port), vec![by_proc[0].1]);
        drop(listener);
        assert!(accepting_listeners(port).is_empty());
    }

    #[tokio::test]
    async fn a_listener_is_proven_only_for_the_group_that_holds_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // This test process holds the socket; its own group is the test's group.
        let own_group = rustix::process::getpgrp().as_raw_nonzero().get() as u32;
        let own = std::process::id();
        assert!(holds_socket(own, accepting_listeners(port)[0]));
        // No process has this pid (pids stay below 2^22).
        let error = listener_is_held_by_group(port, 4_000_000_000).unwrap_err();
        assert!(
            error.contains(&format!("held by pid {own}")),
            "{error} (own pid {own})"
        );
        drop(listener);
        let error = listener_is_held_by_group(port, own_group).unwrap_err();
        assert!(error.contains("no socket listens"), "{error}");
    }
}
