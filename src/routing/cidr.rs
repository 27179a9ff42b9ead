//! IP networks in CIDR notation, for trusted proxies and the QA header's `from` list.

use super::RoutingError;

/// An IP network (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address.
    pub(crate) fn parse(text: &str) -> Result<Cidr, RoutingError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: std::net::IpAddr = addr.trim().parse().map_err(|_| {
            RoutingError::BadNetwork(format!("{text:?} is not an IP address or CIDR"))
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| {
                    RoutingError::BadNetwork(format!("{text:?}: prefix must be 0..={max}"))
                })?,
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub(crate) fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership() {
        let net = Cidr::parse("10.1.0.0/16").expect("valid");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(
            net.contains("::ffff:10.1.0.9".parse().expect("ip")),
            "IPv4-mapped"
        );
        let one = Cidr::parse("192.0.2.7").expect("valid");
        assert!(one.contains("192.0.2.7".parse().expect("ip")));
        assert!(!one.contains("192.0.2.8".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("valid");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!v6.contains("10.1.0.1".parse().expect("ip")));
        let all = Cidr::parse("0.0.0.0/0").expect("valid");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
