//! IP families, as Services (`spec.ipFamilies`) and EndpointSlices (`addressType`) name
//! them: the table is built per family, as kube-proxy's dual-stack meta-proxier runs one
//! proxier per family.

use std::fmt;
use std::net::IpAddr;

/// An IP family. IPv4 sorts first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The API's name (`IPv4`, `IPv6`) to a family; `None` for anything else (`FQDN`, say).
    pub fn from_api(name: &str) -> Option<IpFamily> {
        match name {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_by_address_and_by_api_name() {
        assert_eq!(IpFamily::of("10.0.0.1".parse().expect("ip")), IpFamily::V4);
        assert_eq!(IpFamily::of("fd00::1".parse().expect("ip")), IpFamily::V6);
        assert_eq!(IpFamily::from_api("IPv6"), Some(IpFamily::V6));
        assert_eq!(IpFamily::from_api("FQDN"), None);
        assert_eq!(IpFamily::V4.to_string(), "IPv4");
    }
}
