//! The machine's network changes, as the kernel reports them: the daemon's
//! cue that a server it could not reach may be reachable now, and that the
//! connections it holds may be dead.
//!
//! Without this, `watch` learns that a server is back only by retrying, up
//! to a minute apart; a box that is online only briefly can miss its window.
//! On Linux a `NETLINK_ROUTE` socket (the `netlink-sys` crate; messages
//! parsed by `netlink-packet-route`) is subscribed to links, IPv4/IPv6
//! addresses and routes. Anything appearing (a link up, an address or a
//! route added) is [`Change::Up`]; anything going away is [`Change::Down`].
//! Elsewhere, or where netlink is refused (a container without it), or with
//! `DIFFLOG_NET_EVENTS=off`, [`listen`] says why and the daemon relies on its
//! backoff alone.

use std::time::Duration;
use tokio::sync::mpsc;

/// What changed, as far as uploading is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Something appeared: a link came up, an address or a route was added.
    /// A server that was unreachable may be reachable now.
    Up,
    /// Something went away: connections through it may be dead.
    Down,
}

/// The environment variable that turns network events off (`off`), leaving
/// the daemon with its backoff alone.
pub const ENV: &str = "DIFFLOG_NET_EVENTS";

/// A stream of network changes.
pub struct NetEvents {
    rx: mpsc::UnboundedReceiver<Change>,
    /// A change received and still settling: the last one, and when it
    /// settles. Kept here, so a `next` dropped mid-wait (it races other
    /// events in a `select!`) loses nothing.
    settling: Option<(Change, tokio::time::Instant)>,
}

impl NetEvents {
    /// Waits for the next change, then gathers the ones that follow within
    /// `settle` of each other (a link coming up brings its addresses and
    /// routes a moment later, a flapping link many changes at once), and
    /// returns the last: the state the network settled in. `None` once the
    /// listener has stopped (it logs why). Cancel safe.
    pub async fn next(&mut self, settle: Duration) -> Option<Change> {
        loop {
            let Some((last, until)) = self.settling else {
                let c = self.rx.recv().await?;
                self.settling = Some((c, tokio::time::Instant::now() + settle));
                continue;
            };
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(c)) => {
                    self.settling = Some((c, tokio::time::Instant::now() + settle));
                }
                Ok(None) | Err(_) => {
                    self.settling = None;
                    return Some(last);
                }
            }
        }
    }
}

/// Starts listening for network changes (inside a tokio runtime), or says
/// why it cannot.
pub fn listen() -> Result<NetEvents, String> {
    if std::env::var(ENV).is_ok_and(|v| v.eq_ignore_ascii_case("off") || v == "0") {
        return Err(format!("{ENV}=off"));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    platform::spawn(tx)?;
    Ok(NetEvents { rx, settling: None })
}

#[cfg(target_os = "linux")]
mod platform {
    use super::Change;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::link::LinkFlags;
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr};
    use tokio::sync::mpsc::UnboundedSender;

    /// Links, IPv4/IPv6 addresses and routes.
    const GROUPS: u32 = (libc::RTMGRP_LINK
        | libc::RTMGRP_IPV4_IFADDR
        | libc::RTMGRP_IPV4_ROUTE
        | libc::RTMGRP_IPV6_IFADDR
        | libc::RTMGRP_IPV6_ROUTE) as u32;

    pub(super) fn spawn(tx: UnboundedSender<Change>) -> Result<(), String> {
        let mut socket = netlink_sys::TokioSocket::new(NETLINK_ROUTE)
            .map_err(|e| format!("cannot open a netlink socket: {e}"))?;
        socket
            .socket_mut()
            .bind(&SocketAddr::new(0, GROUPS))
            .map_err(|e| format!("cannot subscribe to network changes: {e}"))?;
        tokio::spawn(async move {
            loop {
                let changes = match socket.recv_from_full().await {
                    Ok((buf, _)) => classify(&buf),
                    // The kernel dropped messages (our buffer overran): what
                    // was lost is unknown, so assume something came up.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => vec![Change::Up],
                    Err(e) => {
                        tracing::warn!(
                            "network change events stopped ({e}); retrying with backoff alone"
                        );
                        return;
                    }
                };
                for c in changes {
                    if tx.send(c).is_err() {
                        return; // the daemon has stopped
                    }
                }
            }
        });
        Ok(())
    }

    /// The changes in one datagram (it may hold several messages). A message
    /// that cannot be parsed counts as `Up`: something changed, and an
    /// extra attempt costs one request.
    pub(super) fn classify(mut buf: &[u8]) -> Vec<Change> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let msg = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf) {
                Ok(m) => m,
                Err(_) => {
                    out.push(Change::Up);
                    break;
                }
            };
            // Messages are 4-byte aligned within the datagram.
            let len = (msg.header.length as usize + 3) & !3;
            if let NetlinkPayload::InnerMessage(m) = msg.payload {
                if let Some(c) = change_of(&m) {
                    out.push(c);
                }
            }
            if len == 0 || len > buf.len() {
                break;
            }
            buf = &buf[len..];
        }
        out
    }

    fn change_of(m: &RouteNetlinkMessage) -> Option<Change> {
        use RouteNetlinkMessage as M;
        Some(match m {
            M::NewLink(l) => {
                let up = l.header.flags.contains(LinkFlags::Up)
                    && (l.header.flags.contains(LinkFlags::LowerUp)
                        || l.header.flags.contains(LinkFlags::Running));
                if up {
                    Change::Up
                } else {
                    Change::Down
                }
            }
            M::NewAddress(_) | M::NewRoute(_) => Change::Up,
            M::DelLink(_) | M::DelAddress(_) | M::DelRoute(_) => Change::Down,
            _ => return None,
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    use super::Change;
    use tokio::sync::mpsc::UnboundedSender;

    pub(super) fn spawn(_tx: UnboundedSender<Change>) -> Result<(), String> {
        Err("network change events are read on Linux only".into())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A `next` dropped while its change settles (another event won the
    /// `select!`) leaves the change for the next call.
    #[tokio::test(start_paused = true)]
    async fn a_change_survives_a_dropped_wait() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut ev = NetEvents { rx, settling: None };
        tx.send(Change::Up).unwrap();
        let settle = Duration::from_millis(200);
        let dropped = tokio::time::timeout(Duration::from_millis(50), ev.next(settle)).await;
        assert!(dropped.is_err(), "returned before it settled");
        let again = tokio::time::timeout(Duration::from_secs(5), ev.next(settle)).await;
        assert_eq!(again, Ok(Some(Change::Up)), "the change was lost");
        tx.send(Change::Up).unwrap();
        tx.send(Change::Down).unwrap();
        assert_eq!(
            ev.next(settle).await,
            Some(Change::Down),
            "the last one counts"
        );
    }

    /// Truncated or foreign bytes never panic; they count as a change.
    #[test]
    fn garbage_is_a_change_not_a_panic() {
        for bytes in [
            &b""[..],
            &[0u8; 3],
            &[0xff; 64],
            &[16, 0, 0, 0, 16, 0, 0, 0],
        ] {
            let c = platform::classify(bytes);
            assert!(c.iter().all(|c| *c == Change::Up), "{bytes:?}: {c:?}");
        }
    }

    /// Taking a link down and up in a network namespace of our own is seen
    /// as Down, then Up. Needs root (`unshare`); says so and passes
    /// otherwise, since the integration tests cover it where they run.
    #[test]
    fn a_link_going_down_and_up_is_reported_in_that_order() {
        let ok = std::process::Command::new("unshare")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot create a network namespace here");
            return;
        }
        // A thread of our own enters a new namespace; everything it does
        // (the netlink socket, `ip`) happens there.
        std::thread::spawn(|| {
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut ev = listen().unwrap();
                let ip = |s: &str| {
                    let st = std::process::Command::new("ip")
                        .args(["link", "set", "lo", s])
                        .status()
                        .unwrap();
                    assert!(st.success());
                };
                ip("up");
                let settle = Duration::from_millis(100);
                assert_eq!(ev.next(settle).await, Some(Change::Up));
                ip("down");
                assert_eq!(ev.next(settle).await, Some(Change::Down));
                ip("up");
                assert_eq!(ev.next(settle).await, Some(Change::Up));
            });
        })
        .join()
        .unwrap();
    }
}
