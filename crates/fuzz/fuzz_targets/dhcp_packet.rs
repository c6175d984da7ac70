//! The dhcp daemon's parsers of what arrives from the network: a DHCP message, the IPv4/UDP
//! framing around it, and the route options 121 and 33. Must hold: no panic; a parsed message
//! encodes to bytes that parse back to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../plugins/dhcp/src/packet.rs"]
#[allow(dead_code)]
mod packet;

fuzz_target!(|data: &[u8]| {
    let _ = packet::udp_payload(data, 68);
    if let Some(routes) = packet::classless_routes(data) {
        assert!(routes.iter().all(|r| r.prefix <= 32));
    }
    assert_eq!(packet::static_routes(data).len(), data.len() / 8);
    if let Ok(m) = packet::Message::parse(data) {
        let _ = m.kind();
        let back = packet::Message::parse(&m.encode()).expect("an encoded message parses");
        assert_eq!(back, m);
    }
});
