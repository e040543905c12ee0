//! kube-proxy's `--nodeport-addresses`: which of the node's addresses serve NodePorts, as
//! CIDRs of both families or `primary`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// The NodePort address filter, as kube-proxy's `--nodeport-addresses` reads it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodePortAddresses {
    /// The node's addresses within these CIDRs, family by family: a family none of them is
    /// of keeps all its addresses. Empty: all of the node's addresses.
    Cidrs(Vec<IpNet>),
    /// Only the node's primary address of each family: its first InternalIP of the family,
    /// else its first ExternalIP (kube-proxy's node IPs); without a Node, 127.0.0.1.
    Primary,
}

impl Default for NodePortAddresses {
    fn default() -> Self {
        NodePortAddresses::Cidrs(Vec::new())
    }
}

impl NodePortAddresses {
    /// The CIDRs this filter stands for on a node whose primary addresses are `primary`
    /// (one per family at most): `Primary` is each of them alone, as kube-proxy turns
    /// `primary` into `/32` and `/128` CIDRs.
    pub(super) fn cidrs(&self, primary: &[IpAddr]) -> Vec<IpNet> {
        match self {
            NodePortAddresses::Cidrs(cidrs) => cidrs.clone(),
            NodePortAddresses::Primary => primary.iter().map(|ip| IpNet::from(*ip)).collect(),
        }
    }
}

/// What is wrong with a `--nodeport-addresses` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodePortAddressesError {
    #[error("{0:?} is not a CIDR (as 10.0.0.0/8 or fd00::/64) nor \"primary\"")]
    NotCidr(String),
    #[error("\"primary\" cannot be combined with CIDRs")]
    PrimaryWithCidrs,
}

impl FromStr for NodePortAddresses {
    type Err = NodePortAddressesError;

    /// `primary`, or comma-separated CIDRs ("" for none).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let items: Vec<&str> = text.split(',').map(str::trim).filter(|item| !item.is_empty()).collect();
        if items == ["primary"] {
            return Ok(NodePortAddresses::Primary);
        }
        if items.contains(&"primary") {
            return Err(NodePortAddressesError::PrimaryWithCidrs);
        }
        let parse =
            |item: &&str| item.parse::<IpNet>().map_err(|_| NodePortAddressesError::NotCidr((*item).to_owned()));
        items.iter().map(parse).collect::<Result<_, _>>().map(NodePortAddresses::Cidrs)
    }
}

impl fmt::Display for NodePortAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodePortAddresses::Primary => f.write_str("primary"),
            NodePortAddresses::Cidrs(cidrs) => {
                let cidrs: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
                f.write_str(&cidrs.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> NodePortAddresses {
        NodePortAddresses::Cidrs(list.iter().map(|cidr| cidr.parse().expect("cidr")).collect())
    }

    #[test]
    fn parses_cidrs_of_both_families_or_primary() {
        assert_eq!("10.0.0.0/8, fd00::/64".parse(), Ok(cidrs(&["10.0.0.0/8", "fd00::/64"])));
        assert_eq!("".parse(), Ok(NodePortAddresses::default()));
        assert_eq!("primary".parse(), Ok(NodePortAddresses::Primary));
        assert_eq!("10.0.0.0/8,primary".parse::<NodePortAddresses>(), Err(NodePortAddressesError::PrimaryWithCidrs));
        let error = "10.0.0.0/8,10.0.0.1".parse::<NodePortAddresses>().expect_err("no prefix length");
        assert_eq!(error.to_string(), "\"10.0.0.1\" is not a CIDR (as 10.0.0.0/8 or fd00::/64) nor \"primary\"");
        assert_eq!(cidrs(&["10.0.0.0/8", "fd00::/64"]).to_string(), "10.0.0.0/8,fd00::/64");
    }

    #[test]
    fn primary_is_each_primary_address_alone() {
        let primary: Vec<IpAddr> = vec!["192.168.1.10".parse().expect("ip"), "fd00::10".parse().expect("ip")];
        let expected: Vec<IpNet> =
            vec!["192.168.1.10/32".parse().expect("cidr"), "fd00::10/128".parse().expect("cidr")];
        assert_eq!(NodePortAddresses::Primary.cidrs(&primary), expected);
        assert_eq!(cidrs(&["10.0.0.0/8"]).cidrs(&primary), cidrs(&["10.0.0.0/8"]).cidrs(&[]));
    }
}
