//! Transport and access security: the processor routes' network allow-list, the admin
//! token kept only as a digest, and the optional TLS listener.

use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use subtle::ConstantTimeEq;

/// One CIDR block, IPv4 or IPv6 (`10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(IpNet);

impl Network {
    /// Parses `addr/prefix` or a bare address. Host bits set below the prefix are refused
    /// (`10.0.0.1/8` is almost always a typo for something else). The parts are checked one
    /// by one, rather than by `IpNet`'s parser, so that the error says which part is wrong.
    pub fn parse(text: &str) -> Result<Network, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{text}' is not an IPv4 or IPv6 network like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8::from_str` would take `+8`.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().unwrap_or(u8::MAX)
            }
            Some(_) => return Err(format!("'{text}': the prefix length is not a number")),
        };
        let net = IpNet::new(addr, prefix)
            .map_err(|_| format!("'{text}': the prefix length must be between 0 and {max}"))?;
        if net.network() != addr {
            return Err(format!(
                "'{text}' has host bits set below /{prefix}; write the network address"
            ));
        }
        // An IPv4-mapped block (`::ffff:10.0.0.0/104`, the form a dual-stack listener shows
        // IPv4 peers in) is the IPv4 block it maps: peers are compared as IPv4.
        if let IpAddr::V6(v6) = addr
            && let Some(v4) = v6.to_ipv4_mapped()
            && prefix >= 96
        {
            let net = IpNet::new(IpAddr::V4(v4), prefix - 96).map_err(|e| e.to_string())?;
            return Ok(Network(net));
        }
        Ok(Network(net))
    }

    /// Whether `ip` is inside this block. An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`,
    /// what a dual-stack socket reports for an IPv4 client) is treated as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The networks allowed to call the processor routes. Empty: every peer is allowed.
///
/// The peer is the TCP connection's remote address. `X-Forwarded-For` and similar headers are
/// never consulted: any client can write them. Behind a proxy, list the proxy's address here
/// and filter the real clients at the proxy.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    networks: Vec<Network>,
}

impl AllowList {
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<AllowList, String> {
        let networks = list
            .iter()
            .map(|s| Network::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowList { networks })
    }

    /// Whether a request from `peer` may proceed. An unknown peer (no socket address, e.g.
    /// a Unix socket) is refused when a list is configured.
    pub fn allows(&self, peer: Option<IpAddr>) -> bool {
        if self.networks.is_empty() {
            return true;
        }
        peer.is_some_and(|ip| self.networks.iter().any(|n| n.contains(ip)))
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

/// The admin bearer token, kept only as its SHA-256 digest: the token itself is not held
/// by the running server, cannot be printed, and is compared in constant time.
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant-time check of a presented token (digests have a fixed length, so the
    /// comparison time depends on neither token's length nor content). An empty token
    /// never matches.
    pub fn matches(&self, presented: &str) -> bool {
        let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        !presented.is_empty() && bool::from(self.0.ct_eq(&got))
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(***)")
    }
}

/// A rustls server configuration from PEM files: the certificate chain (leaf first) and
/// its private key (PKCS#8, PKCS#1 or SEC1). TLS 1.2 and 1.3 with the ring provider.
pub fn tls_config(cert_path: &Path, key_path: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read the certificate {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", cert_path.display());
    }
    // The error text of a key parse never includes key material.
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|_| anyhow::anyhow!("{} holds no readable PEM private key", key_path.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not form a usable pair")?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks_contain_what_they_should() {
        let n = Network::parse("10.0.0.0/8").unwrap();
        assert!(n.contains(ip("10.0.0.0")));
        assert!(n.contains(ip("10.255.255.255")));
        assert!(!n.contains(ip("11.0.0.0")));
        assert!(!n.contains(ip("9.255.255.255")));
        assert!(n.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(!n.contains(ip("::1")));
        // A block written in the mapped form is the IPv4 block.
        let mapped = Network::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(mapped.contains(ip("10.9.8.7")) && mapped.contains(ip("::ffff:10.9.8.7")));
        assert!(!mapped.contains(ip("11.0.0.1")));
        let one = Network::parse("::ffff:127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let h = Network::parse("127.0.0.1").unwrap();
        assert_eq!(h.to_string(), "127.0.0.1/32");
        assert!(h.contains(ip("127.0.0.1")) && !h.contains(ip("127.0.0.2")));
        let all4 = Network::parse("0.0.0.0/0").unwrap();
        assert!(all4.contains(ip("203.0.113.9")) && !all4.contains(ip("2001:db8::1")));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all6 = Network::parse("::/0").unwrap();
        assert!(all6.contains(ip("fe80::1")));
        let lo6 = Network::parse("::1/128").unwrap();
        assert!(lo6.contains(ip("::1")) && !lo6.contains(ip("::2")));
        let odd = Network::parse("192.168.4.0/22").unwrap();
        assert!(odd.contains(ip("192.168.7.255")) && !odd.contains(ip("192.168.8.0")));
    }

    #[test]
    fn bad_networks_are_refused_with_a_reason() {
        for (bad, why) in [
            ("10.0.0.0/33", "between 0 and 32"),
            ("::/129", "between 0 and 128"),
            ("10.0.0.1/8", "host bits"),
            ("10.0.0.0/", "not a number"),
            ("10.0.0.0/-1", "not a number"),
            ("10.0.0.0/+8", "not a number"),
            ("10.0.0/8", "not an IPv4"),
            ("localhost", "not an IPv4"),
            ("", "not an IPv4"),
            ("10.0.0.0/8/8", "not a number"),
        ] {
            let e = Network::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn allow_list_empty_allows_all_else_only_members() {
        assert!(AllowList::default().allows(None));
        let l = AllowList::parse(&["10.0.0.0/8", "::1/128"]).unwrap();
        assert!(l.allows(Some(ip("10.2.3.4"))));
        assert!(l.allows(Some(ip("::1"))));
        assert!(!l.allows(Some(ip("127.0.0.1"))));
        assert!(!l.allows(None));
    }

    #[test]
    fn token_digest_matches_only_the_token_and_hides_it() {
        let t = TokenDigest::of("s3cret-admin-token-value");
        assert!(t.matches("s3cret-admin-token-value"));
        assert!(!t.matches("s3cret-admin-token-valuE"));
        assert!(!t.matches(""));
        assert!(!TokenDigest::of("").matches(""));
        assert_eq!(format!("{t:?}"), "TokenDigest(***)");
    }
}
