//! dummy links: a link with no wire, which keeps addresses up and routable (the `dummy` plugin
//! gives one to a container as an address holder). The kernel needs the `dummy` driver
//! (CONFIG_DUMMY); without it creation fails with EOPNOTSUPP.

use crate::netlink::NlError;
use crate::rtnl::Rtnl;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

impl Rtnl {
    /// Creates the dummy link `name`, down, in the handle's namespace. EEXIST when the name is
    /// taken there.
    pub fn create_dummy(&mut self, name: &str) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Dummy)]));
        self.sock.execute(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }
}
