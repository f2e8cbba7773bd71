//! PROXY protocol version 2 (haproxy's `proxy-protocol.txt`, section 2.2): the binary header an
//! L4 load balancer (AWS NLB, GCP, haproxy `send-proxy-v2`, Envoy) puts in front of the TLS bytes
//! so that the real client address survives the hop.
//!
//! The header is read with exact-length reads (16 bytes, then the length it announces), so not a
//! byte of the TLS ClientHello that follows is consumed. Version 1 (the text form) is not
//! accepted: every balancer that speaks the protocol speaks version 2.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The largest header accepted (addresses plus TLVs). Real balancers send well under 256 bytes;
/// the protocol allows 64 KiB, which would let anyone make us buffer that much per connection.
pub const MAX_LEN: usize = 1024;

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `PROXY` command with a TCP address: the real client and the address it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// `LOCAL` command (the balancer's own health check) or an address family ztgate cannot
    /// represent (UNSPEC, AF_UNIX): the socket's own peer address stands.
    Local,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection did not start with a PROXY protocol v2 header")]
    NoSignature,
    #[error("unsupported PROXY protocol version {0} (only 2 is accepted)")]
    Version(u8),
    #[error("unknown PROXY protocol command {0:#x}")]
    Command(u8),
    #[error("PROXY protocol header announces {0} bytes (limit {MAX_LEN})")]
    TooLong(usize),
    #[error("PROXY protocol address block of {len} bytes is too short for family {family:#04x}")]
    ShortAddress { family: u8, len: usize },
    #[error("PROXY protocol over UDP (family {0:#04x}) on a TCP listener")]
    Datagram(u8),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyHeaderError {
    /// A bounded label for metrics and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io(_) => "proxy_protocol_io",
            Self::NoSignature
            | Self::Version(_)
            | Self::Command(_)
            | Self::TooLong(_)
            | Self::ShortAddress { .. }
            | Self::Datagram(_) => "proxy_protocol_invalid",
        }
    }
}

/// Reads one v2 header from the start of `io`.
pub async fn read<R: AsyncRead + Unpin>(io: &mut R) -> Result<ProxyHeader, ProxyHeaderError> {
    let mut fixed = [0u8; 16];
    io.read_exact(&mut fixed).await?;
    let len = prefix(&fixed)?;
    let mut body = [0u8; MAX_LEN];
    let body = &mut body[..len];
    io.read_exact(body).await?;
    parse_body(fixed[12], fixed[13], body)
}

/// Checks the fixed 16-byte prefix and returns the length of what follows.
pub fn prefix(fixed: &[u8; 16]) -> Result<usize, ProxyHeaderError> {
    if fixed[..12] != SIGNATURE {
        return Err(ProxyHeaderError::NoSignature);
    }
    let version = fixed[12] >> 4;
    if version != 2 {
        return Err(ProxyHeaderError::Version(version));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_LEN {
        return Err(ProxyHeaderError::TooLong(len));
    }
    Ok(len)
}

/// Parses the variable part, given the version/command and family/protocol bytes. TLVs after
/// the addresses are skipped.
pub fn parse_body(ver_cmd: u8, family: u8, body: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    match ver_cmd & 0x0f {
        0x0 => return Ok(ProxyHeader::Local),
        0x1 => {}
        other => return Err(ProxyHeaderError::Command(other)),
    }
    let short = || ProxyHeaderError::ShortAddress {
        family,
        len: body.len(),
    };
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match family {
        // TCP over IPv4: src addr, dst addr, src port, dst port.
        0x11 => {
            let b = body.get(..12).ok_or_else(short)?;
            let src = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let dst = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V4(src), port(&b[8..10])),
                destination: SocketAddr::new(IpAddr::V4(dst), port(&b[10..12])),
            })
        }
        // TCP over IPv6.
        0x21 => {
            let b = body.get(..36).ok_or_else(short)?;
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&b[..16]);
            dst.copy_from_slice(&b[16..32]);
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(src)), port(&b[32..34])),
                destination: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(dst)), port(&b[34..36])),
            })
        }
        0x12 | 0x22 => Err(ProxyHeaderError::Datagram(family)),
        // UNSPEC or AF_UNIX: the spec says to use the real connection's addresses.
        _ => Ok(ProxyHeader::Local),
    }
}

/// Encodes a v2 `PROXY` header for a TCP connection (tests, benches and the demo use it).
pub fn encode(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
        let mut r = bytes;
        read(&mut r).await
    }

    #[tokio::test]
    async fn round_trips_ipv4_and_ipv6_and_leaves_the_rest_unread() {
        let src: SocketAddr = "203.0.113.7:51000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:8443".parse().unwrap();
        let mut bytes = encode(src, dst);
        bytes.extend_from_slice(b"\x16\x03\x01");
        let mut r = &bytes[..];
        let h = read(&mut r).await.unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: src,
                destination: dst
            }
        );
        assert_eq!(r, b"\x16\x03\x01", "the TLS bytes after the header must stay unread");

        let src6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let dst6: SocketAddr = "[2001:db8::2]:8443".parse().unwrap();
        let h = parse(&encode(src6, dst6)).await.unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: src6,
                destination: dst6
            }
        );
    }

    #[tokio::test]
    async fn local_command_and_unspec_family_keep_the_socket_address() {
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(parse(&local).await.unwrap(), ProxyHeader::Local);
        let mut unix = SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0x00, 0x04, 1, 2, 3, 4]);
        assert_eq!(parse(&unix).await.unwrap(), ProxyHeader::Local);
    }

    #[tokio::test]
    async fn tlvs_after_the_addresses_are_skipped() {
        let src: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let dst: SocketAddr = "192.0.2.2:2".parse().unwrap();
        let mut bytes = encode(src, dst);
        // PP2_TYPE_AUTHORITY TLV ("lb") appended; fix the announced length.
        bytes.extend_from_slice(&[0x02, 0x00, 0x02, b'l', b'b']);
        bytes[14..16].copy_from_slice(&(12u16 + 5).to_be_bytes());
        assert_eq!(
            parse(&bytes).await.unwrap(),
            ProxyHeader::Proxied {
                source: src,
                destination: dst
            }
        );
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_valid_v2_header() {
        assert!(matches!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00\x00\x00").await,
            Err(ProxyHeaderError::NoSignature)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n").await,
            Err(ProxyHeaderError::NoSignature)
        ));
        let mut v1 = SIGNATURE.to_vec();
        v1.extend_from_slice(&[0x11, 0x11, 0, 0]);
        assert!(matches!(parse(&v1).await, Err(ProxyHeaderError::Version(1))));
        let mut cmd = SIGNATURE.to_vec();
        cmd.extend_from_slice(&[0x2f, 0x11, 0, 0]);
        assert!(matches!(parse(&cmd).await, Err(ProxyHeaderError::Command(0xf))));
        let mut long = SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&long).await, Err(ProxyHeaderError::TooLong(65535))));
        let mut short = SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(
            parse(&short).await,
            Err(ProxyHeaderError::ShortAddress { family: 0x11, len: 4 })
        ));
        let mut udp = SIGNATURE.to_vec();
        udp.extend_from_slice(&[0x21, 0x12, 0, 12]);
        udp.extend_from_slice(&[0; 12]);
        assert!(matches!(parse(&udp).await, Err(ProxyHeaderError::Datagram(0x12))));
        // Truncated: the connection closed inside the header.
        assert!(matches!(parse(&SIGNATURE[..8]).await, Err(ProxyHeaderError::Io(_))));
    }
}
