//! The simulated "air": each transmission is a UDP datagram to every peer, for
//! development and tests on one machine (two agents on loopback).
//!
//! Like the air, it does not tell the sender whether anyone listens, and it drops
//! what a LoRa radio could not carry (more than 255 bytes). Readings are fixed
//! (RSSI -60 dBm, SNR 9.5 dB) so that the gateway's metrics have values.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{Radio, RadioError, Received};
use crate::airtime::{Modulation, time_on_air};

/// A LoRa packet's largest payload.
pub const MAX_PACKET: usize = 255;
/// The simulated signal strength.
pub const SIMULATED_RSSI_DBM: f32 = -60.0;
/// The simulated signal-to-noise ratio.
pub const SIMULATED_SNR_DB: f32 = 9.5;

/// A radio on the simulated air.
#[derive(Debug)]
pub struct UdpAir {
    socket: UdpSocket,
    local: SocketAddr,
    peers: Vec<SocketAddr>,
    /// When set, a transmission lasts the frame's airtime, as on a real radio.
    airtime: Option<Modulation>,
}

impl UdpAir {
    /// Binds `local` (port 0 picks one) and transmits to `peers`.
    pub async fn bind(local: SocketAddr, peers: Vec<SocketAddr>) -> Result<Self, RadioError> {
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|source| RadioError::Io {
                what: format!("binding the simulated air on udp {local}"),
                source,
            })?;
        let local = socket.local_addr().map_err(|source| RadioError::Io {
            what: format!("reading the address of udp {local}"),
            source,
        })?;
        Ok(Self {
            socket,
            local,
            peers,
            airtime: None,
        })
    }

    /// The bound address (with the port chosen when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Replaces the peers (e.g. once the other end has bound port 0).
    pub fn set_peers(&mut self, peers: Vec<SocketAddr>) {
        self.peers = peers;
    }

    /// Makes each transmission take the frame's time on air under `m` (the frame is
    /// delivered at the end of it, as a receiver hears it).
    pub fn with_airtime(mut self, m: Modulation) -> Self {
        self.airtime = Some(m);
        self
    }
}

impl Radio for UdpAir {
    async fn transmit(&mut self, frame: &[u8]) -> Result<(), RadioError> {
        if frame.len() > MAX_PACKET {
            return Err(RadioError::TooLong {
                len: frame.len(),
                max: MAX_PACKET,
            });
        }
        if let Some(m) = &self.airtime {
            tokio::time::sleep(time_on_air(m, frame.len())).await;
        }
        for peer in &self.peers {
            match self.socket.send_to(frame, peer).await {
                Ok(_) => {}
                // Nobody listening there: the air does not tell.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(source) => {
                    return Err(RadioError::Io {
                        what: format!("sending on udp {} to {peer}", self.local),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    async fn receive(&mut self, timeout: Duration) -> Result<Option<Received>, RadioError> {
        // One byte more than a packet, to tell an oversized datagram from a full one.
        let mut buf = [0u8; MAX_PACKET + 1];
        let listen = async {
            loop {
                match self.socket.recv_from(&mut buf).await {
                    Ok((n, _)) if n > MAX_PACKET => continue,
                    Ok((n, _)) => return Ok(n),
                    // An ICMP "port unreachable" for an earlier send, not a failure.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                    Err(source) => return Err(source),
                }
            }
        };
        match tokio::time::timeout(timeout, listen).await {
            Err(_elapsed) => Ok(None),
            Ok(Err(source)) => Err(RadioError::Io {
                what: format!("receiving on udp {}", self.local),
                source,
            }),
            Ok(Ok(n)) => Ok(Some(Received {
                bytes: buf[..n].to_vec(),
                rssi_dbm: Some(SIMULATED_RSSI_DBM),
                snr_db: Some(SIMULATED_SNR_DB),
            })),
        }
    }

    fn describe(&self) -> String {
        format!("udp {}", self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{AckFrame, Frame, Key, NodeId, decode};

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    async fn pair() -> (UdpAir, UdpAir) {
        let mut a = UdpAir::bind(loopback(), vec![]).await.expect("bind a");
        let b = UdpAir::bind(loopback(), vec![a.local_addr()])
            .await
            .expect("bind b");
        a.set_peers(vec![b.local_addr()]);
        (a, b)
    }

    #[tokio::test]
    async fn frames_cross_both_ways() {
        let (mut a, mut b) = pair().await;
        assert!(a.describe().starts_with("udp 127.0.0.1:"));
        a.transmit(b"hello").await.expect("transmit");
        let got = b
            .receive(Duration::from_secs(5))
            .await
            .expect("receive")
            .expect("a frame");
        assert_eq!(got.bytes, b"hello");
        assert_eq!(got.rssi_dbm, Some(-60.0));
        assert_eq!(got.snr_db, Some(9.5));

        let key = Key::from_hex("00112233445566778899aabbccddeeff").expect("key");
        let ack = Frame::Ack(AckFrame {
            node: NodeId([1, 2, 3, 4]),
            epoch: 0,
            sequence: 9,
            resync: false,
        });
        b.transmit(&ack.encode(&key).expect("encode"))
            .await
            .expect("transmit");
        let got = a
            .receive(Duration::from_secs(5))
            .await
            .expect("receive")
            .expect("the ack");
        assert_eq!(decode(&got.bytes, &key), Ok(ack));
    }

    #[tokio::test]
    async fn silence_times_out() {
        let (_a, mut b) = pair().await;
        let got = b.receive(Duration::from_millis(50)).await.expect("receive");
        assert_eq!(got, None);
    }

    #[tokio::test]
    async fn oversized_is_refused_and_ignored() {
        let (mut a, mut b) = pair().await;
        let big = vec![0u8; 256];
        assert!(matches!(
            a.transmit(&big).await,
            Err(RadioError::TooLong { len: 256, max: 255 })
        ));
        // Something else on the port sends a datagram too big for LoRa: dropped.
        let raw = UdpSocket::bind(loopback()).await.expect("bind raw");
        raw.send_to(&big, b.local_addr()).await.expect("send raw");
        raw.send_to(&[7u8; 255], b.local_addr())
            .await
            .expect("send raw");
        let got = b
            .receive(Duration::from_secs(5))
            .await
            .expect("receive")
            .expect("the 255-byte datagram");
        assert_eq!(got.bytes.len(), 255);
    }

    #[tokio::test]
    async fn nobody_listening_is_not_an_error() {
        let gone = UdpSocket::bind(loopback()).await.expect("bind");
        let addr = gone.local_addr().expect("addr");
        drop(gone);
        let mut a = UdpAir::bind(loopback(), vec![addr]).await.expect("bind");
        for _ in 0..3 {
            a.transmit(b"x").await.expect("transmit into the void");
        }
        assert_eq!(
            a.receive(Duration::from_millis(20)).await.expect("receive"),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn airtime_delays_delivery() {
        let (a, mut b) = pair().await;
        let mut a = a.with_airtime(Modulation::default());
        let start = tokio::time::Instant::now();
        a.transmit(&[0u8; 12]).await.expect("transmit");
        // Tokio's timers tick in milliseconds.
        let took = start.elapsed();
        assert!(took >= Duration::from_micros(1_155_072), "{took:?}");
        assert!(took <= Duration::from_millis(1_157), "{took:?}");
        let got = b.receive(Duration::from_secs(5)).await.expect("receive");
        assert_eq!(got.map(|r| r.bytes.len()), Some(12));
    }
}
