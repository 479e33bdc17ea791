//! Proxies and the Pod Identity Agent (docs/injection.md, "Proxies"): a container that sends its
//! HTTP through `HTTP_PROXY`/`HTTPS_PROXY` sends its credential requests there too unless
//! `NO_PROXY` lists the agent's addresses. Pure: which `NO_PROXY` entries cover an address, and
//! the value with the missing addresses appended. The mutation and `migrate`'s checks read it.

use std::net::IpAddr;

use crate::object::ContainerView;

/// The Pod Identity Agent's link-local addresses (IPv4, IPv6).
pub const AGENT_ADDRESSES: [&str; 2] = ["169.254.170.23", "fd00:ec2::23"];

/// The proxy variables, compared without regard to case (`http_proxy`, `HTTPS_PROXY`, …).
pub const PROXY_VARIABLES: [&str; 2] = ["HTTP_PROXY", "HTTPS_PROXY"];
pub const NO_PROXY: &str = "NO_PROXY";
/// The lower-case spelling, which curl, wget and Python read first.
pub const NO_PROXY_LOWER: &str = "no_proxy";

/// Whether the container sets a proxy or `NO_PROXY` (any case), so the agent's addresses
/// belong in its `NO_PROXY`.
pub fn uses_proxy_settings(container: &ContainerView<'_>) -> bool {
    container.env.iter().flatten().any(|e| {
        PROXY_VARIABLES
            .iter()
            .chain(&[NO_PROXY])
            .any(|p| e.name.eq_ignore_ascii_case(p))
    })
}

/// Whether one `NO_PROXY` entry covers `address`: `*`, the address itself (bracketed or not),
/// or a CIDR block holding it (honoured by Go, curl 7.86 and later, and several SDKs).
pub fn covers(entry: &str, address: IpAddr) -> bool {
    let e = entry.trim();
    if e == "*" {
        return true;
    }
    let (net, bits) = match e.split_once('/') {
        Some((net, bits)) => (net, Some(bits)),
        None => (e, None),
    };
    let net = net.trim_start_matches('[').trim_end_matches(']');
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    let Some(bits) = bits else {
        return net == address;
    };
    let Ok(bits) = bits.parse::<u32>() else {
        return false;
    };
    match (net, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Whether one `NO_PROXY` entry covers `target`, an address or a host name: for an address as
/// [`covers`] says; for a host, the same name (any case), `*`, or a domain it is in (`.amazonaws.com`
/// and `amazonaws.com` both cover `sts.eu-west-1.amazonaws.com`, as curl and Go read them).
pub fn entry_covers(entry: &str, target: &str) -> bool {
    if let Ok(address) = target.trim_start_matches('[').trim_end_matches(']').parse() {
        return covers(entry, address);
    }
    let e = entry.trim().trim_start_matches('.');
    if entry.trim() == "*" {
        return true;
    }
    if e.is_empty() {
        return false;
    }
    let t = target.to_ascii_lowercase();
    let e = e.to_ascii_lowercase();
    t == e || t.ends_with(&format!(".{e}"))
}

/// The `wanted` entries that no entry of the comma-separated `no_proxy` covers, in order.
pub fn uncovered<'w>(no_proxy: &str, wanted: &[&'w str]) -> Vec<&'w str> {
    wanted
        .iter()
        .copied()
        .filter(|w| !no_proxy.split(',').any(|entry| entry_covers(entry, w)))
        .collect()
}

/// `no_proxy` with the `wanted` entries it does not cover appended (its own entries kept as they
/// are), or `None` when it covers them all.
pub fn with_entries(no_proxy: &str, wanted: &[&str]) -> Option<String> {
    let missing = uncovered(no_proxy, wanted);
    if missing.is_empty() {
        return None;
    }
    let kept = no_proxy.trim_end().trim_end_matches(',');
    let mut value = String::with_capacity(kept.len() + 32);
    value.push_str(kept);
    for entry in missing {
        if !value.is_empty() {
            value.push(',');
        }
        value.push_str(entry);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_that_cover_the_agent() {
        let v4 = ip(AGENT_ADDRESSES[0]);
        let v6 = ip(AGENT_ADDRESSES[1]);
        for entry in [
            "*",
            " 169.254.170.23 ",
            "169.254.0.0/16",
            "0.0.0.0/0",
            "169.254.170.23/32",
        ] {
            assert!(covers(entry, v4), "{entry}");
        }
        for entry in [
            "fd00:ec2::23",
            "[fd00:ec2::23]",
            "fd00::/8",
            "fd00:ec2::/32",
        ] {
            assert!(covers(entry, v6), "{entry}");
        }
        for entry in [
            "",
            "localhost",
            ".svc",
            "169.254.170.2",
            "10.0.0.0/8",
            "169.254.0.0/x",
            "fd00::/129",
            "169.254.170.23/33",
        ] {
            assert!(!covers(entry, v4) && !covers(entry, v6), "{entry}");
        }
    }

    #[test]
    fn host_names_are_covered_by_their_name_or_a_domain_they_are_in() {
        let sts = "sts.eu-west-1.amazonaws.com";
        for entry in [
            "*",
            "STS.eu-west-1.amazonaws.com",
            ".amazonaws.com",
            "amazonaws.com",
        ] {
            assert!(entry_covers(entry, sts), "{entry}");
        }
        for entry in [
            "",
            ".",
            "sts.amazonaws.com",
            "ws.com",
            "eu-west-1",
            "169.254.0.0/16",
        ] {
            assert!(!entry_covers(entry, sts), "{entry}");
        }
        assert_eq!(
            with_entries("localhost", &[sts, "10.0.0.5"]).as_deref(),
            Some("localhost,sts.eu-west-1.amazonaws.com,10.0.0.5")
        );
    }

    #[test]
    fn missing_addresses_are_appended_and_existing_entries_kept() {
        assert_eq!(
            with_entries("localhost,.svc", &AGENT_ADDRESSES).as_deref(),
            Some("localhost,.svc,169.254.170.23,fd00:ec2::23")
        );
        assert_eq!(
            with_entries("", &AGENT_ADDRESSES).as_deref(),
            Some("169.254.170.23,fd00:ec2::23")
        );
        assert_eq!(
            with_entries("169.254.0.0/16,", &AGENT_ADDRESSES).as_deref(),
            Some("169.254.0.0/16,fd00:ec2::23")
        );
        assert_eq!(
            with_entries("169.254.170.23,fd00:ec2::23", &AGENT_ADDRESSES),
            None
        );
        assert_eq!(with_entries("*", &AGENT_ADDRESSES), None);
    }
}
