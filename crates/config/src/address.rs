//! `[agent] metrics`: where the Prometheus endpoint listens. A bare port (`"9464"`,
//! `":9464"`) or `localhost` binds loopback; any other address is written out.

use std::net::{Ipv4Addr, SocketAddr};

/// The port the documentation's examples use.
pub const DEFAULT_PORT: u16 = 9464;

/// Parses `[agent] metrics`: `PORT`, `:PORT`, `localhost:PORT` (all loopback),
/// `IPv4:PORT` or `[IPv6]:PORT`.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let bad = |why: &str| {
        format!(
            "`{t}` is not a listen address ({why}); write e.g. \"127.0.0.1:{DEFAULT_PORT}\", \"[::1]:{DEFAULT_PORT}\" or a port"
        )
    };
    let port_only = t.strip_prefix(':').unwrap_or(t);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port_only.parse().map_err(|_| bad("port above 65535"))?;
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
    }
    if let Some(port) = t.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
    }
    t.parse::<SocketAddr>()
        .map_err(|_| bad("an IP address and a port; IPv6 in brackets"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let local = |p| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), p);
        assert_eq!(parse_address("9464").unwrap(), local(9464));
        assert_eq!(parse_address(":9100").unwrap(), local(9100));
        assert_eq!(parse_address("localhost:9100").unwrap(), local(9100));
        assert_eq!(parse_address("127.0.0.1:9464").unwrap(), local(9464));
        assert_eq!(
            parse_address("0.0.0.0:9464").unwrap(),
            "0.0.0.0:9464".parse().unwrap()
        );
        assert_eq!(
            parse_address("[::1]:9464").unwrap(),
            "[::1]:9464".parse().unwrap()
        );
        for bad in ["", "70000", "::1:9464", "example.com:9464", "1.2.3.4"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }
}
