//! Loading the socket load-balancer and attaching it to cgroups.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData};
use aya::programs::cgroup_sock_addr::CgroupSockAddrLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, Link};
use aya::{Ebpf, EbpfLoader};

use crate::error::EbpfError;
use crate::layout::{Lb4Key, Lb4Value};
use crate::maps::LbMaps;
use crate::object::{CONNECT4_PROGRAM, SERVICES_MAP, SOCK_LB};

/// Capacity of the maps, fixed when they are created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Entries of the services map: one per frontend plus one per backend of
    /// each frontend, plus room for the next revision of the largest service
    /// while it is being replaced.
    pub services: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes { services: 65_536 }
    }
}

/// The loaded socket load-balancer: its `cgroup/connect4` program and maps.
pub struct SockLb {
    ebpf: Ebpf,
    services: HashMap<MapData, Lb4Key, Lb4Value>,
}

impl SockLb {
    /// Load the programs and create their maps (max entries from [`MapSizes::default`]).
    pub fn load() -> Result<SockLb, EbpfError> {
        SockLb::load_with(MapSizes::default())
    }

    /// Load the programs and create their maps with the given capacity.
    pub fn load_with(sizes: MapSizes) -> Result<SockLb, EbpfError> {
        if SOCK_LB.is_empty() {
            return Err(EbpfError::ObjectNotBuilt);
        }
        let mut ebpf = EbpfLoader::new()
            .set_max_entries(SERVICES_MAP, sizes.services)
            .load(SOCK_LB)
            .map_err(|source| EbpfError::Load(Box::new(source)))?;
        connect4(&mut ebpf)?
            .load()
            .map_err(|source| EbpfError::Program { name: CONNECT4_PROGRAM, source: Box::new(source) })?;
        let map = ebpf.take_map(SERVICES_MAP).ok_or(EbpfError::MapMissing { name: SERVICES_MAP })?;
        let services = HashMap::try_from(map).map_err(|source| EbpfError::Map {
            name: SERVICES_MAP,
            operation: "open",
            frontend: String::from("all frontends"),
            source: Box::new(source),
        })?;
        Ok(SockLb { ebpf, services })
    }

    /// Attach connect4 to a cgroup2 directory: sockets of every process in it
    /// and its descendants are load-balanced. The guard detaches on drop.
    pub fn attach(&mut self, cgroup2_dir: &Path) -> Result<CgroupAttachment, EbpfError> {
        let cgroup = File::open(cgroup2_dir)
            .map_err(|source| EbpfError::OpenCgroup { path: cgroup2_dir.to_path_buf(), source })?;
        let attach_error = |source| EbpfError::Attach {
            name: CONNECT4_PROGRAM,
            path: cgroup2_dir.to_path_buf(),
            source: Box::new(source),
        };
        let program = connect4(&mut self.ebpf)?;
        // A bpf_link (kernel >= 5.7): it lives as long as its fd, which the
        // guard owns, and never replaces programs others attached there.
        let link_id = program.attach(&cgroup, CgroupAttachMode::Single).map_err(attach_error)?;
        let link = program.take_link(link_id).map_err(attach_error)?;
        tracing::info!(cgroup = %cgroup2_dir.display(), "attached connect4 load-balancer");
        Ok(CgroupAttachment { link: Some(link), cgroup: cgroup2_dir.to_path_buf() })
    }

    /// Typed view of the maps.
    pub fn maps(&mut self) -> LbMaps<'_> {
        LbMaps::new(&mut self.services)
    }
}

fn connect4(ebpf: &mut Ebpf) -> Result<&mut CgroupSockAddr, EbpfError> {
    let missing = EbpfError::ProgramMissing { name: CONNECT4_PROGRAM };
    let program = ebpf.program_mut(CONNECT4_PROGRAM).ok_or(missing)?;
    program.try_into().map_err(|source| EbpfError::Program { name: CONNECT4_PROGRAM, source: Box::new(source) })
}

/// connect4 attached to one cgroup; detached when dropped or by [`detach`](Self::detach).
#[must_use = "dropping the attachment detaches the program"]
pub struct CgroupAttachment {
    link: Option<CgroupSockAddrLink>,
    cgroup: PathBuf,
}

impl CgroupAttachment {
    /// The cgroup2 directory the program is attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Detach now, reporting failure (dropping detaches too, but only logs).
    pub fn detach(mut self) -> Result<(), EbpfError> {
        self.detach_link()
    }

    fn detach_link(&mut self) -> Result<(), EbpfError> {
        match self.link.take() {
            Some(link) => link
                .detach()
                .map_err(|source| EbpfError::Detach { path: self.cgroup.clone(), source: Box::new(source) }),
            None => Ok(()),
        }
    }
}

impl Drop for CgroupAttachment {
    fn drop(&mut self) {
        if self.link.is_none() {
            return;
        }
        if let Err(error) = self.detach_link() {
            tracing::warn!(error = %error, "detach connect4 load-balancer");
        } else {
            tracing::debug!(cgroup = %self.cgroup.display(), "detached connect4 load-balancer");
        }
    }
}
