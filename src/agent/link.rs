//! `agent setup-link`: the node-local interface the agent listens on (`pod-id-link0` with
//! `169.254.170.23/32` and `fd00:ec2::23/128`), made through netlink, idempotently.
//!
//! A `dummy` link is what the EKS agent uses. Where the kernel has no `dummy` link kind (the
//! module is not loaded and cannot be loaded, as in some user namespaces and minimal kernels),
//! an empty `bridge` does the same job for local addresses, and the log says so. IPv6 is
//! optional: where the node has it disabled, the address is skipped with a log line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags};
use rtnetlink::{Handle, LinkBridge, LinkDummy, LinkUnspec};

/// The interface name the EKS agent uses.
pub const LINK_NAME: &str = "pod-id-link0";
pub const IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 23);
pub const IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23);

/// What to set up.
#[derive(Debug, Clone)]
pub struct LinkPlan {
    pub name: String,
    pub ipv4: Ipv4Addr,
    /// `None`: no IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
}

impl Default for LinkPlan {
    fn default() -> Self {
        Self {
            name: LINK_NAME.into(),
            ipv4: IPV4,
            ipv6: Some(IPV6),
        }
    }
}

/// The kind of link that holds the addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Dummy,
    /// The fallback where the kernel has no `dummy` kind.
    Bridge,
    /// It existed already; whatever kind it is, it is used as it is.
    Existing,
}

/// What `setup` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReport {
    pub kind: LinkKind,
    pub index: u32,
    pub ipv4_added: bool,
    pub ipv6: Ipv6Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv6Outcome {
    Added,
    Present,
    NotRequested,
    /// Disabled on the node (or refused): the reason.
    Skipped(String),
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error(
        "{what}: {message} (the agent's init container needs the NET_ADMIN capability and hostNetwork)"
    )]
    Netlink { what: String, message: String },
    #[error(
        "the kernel did not answer the link set-up within {0:?}; run `agent setup-link` again, and check the node's netlink (ip link) if it keeps failing"
    )]
    TimedOut(std::time::Duration),
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn failed(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |e| LinkError::Netlink {
        what,
        message: match errno(&e) {
            Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
            None => e.to_string(),
        },
    }
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, LinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(failed(format!("cannot look up link {name}"))(e)),
    }
}

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EOPNOTSUPP: i32 = 95;

/// Addresses already on the link.
async fn addresses(handle: &Handle, index: u32) -> Result<Vec<IpAddr>, LinkError> {
    let mut found = Vec::new();
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(failed("cannot list addresses"))?
    {
        for attr in msg.attributes {
            if let AddressAttribute::Address(ip) | AddressAttribute::Local(ip) = attr {
                found.push(ip);
            }
        }
    }
    Ok(found)
}

/// Longest the whole set-up may take: an init container that hangs on a netlink answer that never
/// comes would hold the agent's pod (and every pod of the node waiting for credentials) forever.
pub const SETUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Creates the link if needed, brings it up, and adds the addresses it lacks, within
/// [`SETUP_TIMEOUT`].
pub async fn setup(plan: &LinkPlan) -> Result<LinkReport, LinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
    let conn_task = tokio::spawn(connection);
    let result = tokio::time::timeout(SETUP_TIMEOUT, setup_with(&handle, plan))
        .await
        .unwrap_or(Err(LinkError::TimedOut(SETUP_TIMEOUT)));
    conn_task.abort();
    result
}

async fn setup_with(handle: &Handle, plan: &LinkPlan) -> Result<LinkReport, LinkError> {
    let name = plan.name.as_str();
    let kind = match link_index(handle, name).await? {
        Some(_) => LinkKind::Existing,
        None => {
            let dummy = handle
                .link()
                .add(LinkDummy::new(name).up().build())
                .execute()
                .await;
            match dummy {
                Ok(()) => LinkKind::Dummy,
                Err(e) if errno(&e) == Some(EEXIST) => LinkKind::Existing,
                Err(e) if errno(&e) == Some(EOPNOTSUPP) => {
                    tracing::warn!(
                        link = name,
                        "the kernel has no `dummy` link kind here; using an empty bridge for the agent's addresses instead"
                    );
                    match handle
                        .link()
                        .add(LinkBridge::new(name).up().build())
                        .execute()
                        .await
                    {
                        Ok(()) => LinkKind::Bridge,
                        Err(e) if errno(&e) == Some(EEXIST) => LinkKind::Existing,
                        Err(e) => return Err(failed(format!("cannot create bridge {name}"))(e)),
                    }
                }
                Err(e) => return Err(failed(format!("cannot create dummy link {name}"))(e)),
            }
        }
    };
    let index = link_index(handle, name)
        .await?
        .ok_or_else(|| LinkError::Netlink {
            what: format!("link {name}"),
            message: "vanished right after it was created".into(),
        })?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(failed(format!("cannot bring {name} up")))?;

    let present = addresses(handle, index).await?;
    let mut ipv4_added = false;
    if !present.contains(&IpAddr::V4(plan.ipv4)) {
        match handle
            .address()
            .add(index, IpAddr::V4(plan.ipv4), 32)
            .execute()
            .await
        {
            Ok(()) => ipv4_added = true,
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(failed(format!("cannot add {}/32 to {name}", plan.ipv4))(e)),
        }
    }
    let ipv6 = match plan.ipv6 {
        None => Ipv6Outcome::NotRequested,
        Some(ip) if present.contains(&IpAddr::V6(ip)) => Ipv6Outcome::Present,
        Some(ip) => {
            let mut add = handle.address().add(index, IpAddr::V6(ip), 128);
            // No duplicate address detection: the address is only ever local, and a link
            // without carrier (the bridge fallback) would otherwise keep it tentative.
            add.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            match add.execute().await {
                Ok(()) => Ipv6Outcome::Added,
                Err(e) if errno(&e) == Some(EEXIST) => Ipv6Outcome::Present,
                Err(e) => {
                    let why = match errno(&e) {
                        Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
                        None => e.to_string(),
                    };
                    Ipv6Outcome::Skipped(format!("IPv6 looks disabled on this node ({why})"))
                }
            }
        }
    };
    Ok(LinkReport {
        kind,
        index,
        ipv4_added,
        ipv6,
    })
}

/// Logs what `setup` did, one line.
pub fn log_report(plan: &LinkPlan, report: &LinkReport) {
    let kind = match report.kind {
        LinkKind::Dummy => "dummy (created)",
        LinkKind::Bridge => "bridge (created; no dummy link kind in this kernel)",
        LinkKind::Existing => "existing",
    };
    match &report.ipv6 {
        Ipv6Outcome::Skipped(why) => {
            tracing::warn!(link = %plan.name, kind, ipv4 = %plan.ipv4, "link ready; IPv6 address skipped: {why}")
        }
        other => {
            tracing::info!(link = %plan.name, kind, ipv4 = %plan.ipv4, ipv4_added = report.ipv4_added, ipv6 = ?other, "link ready")
        }
    }
}
