//! What the dhcp daemon does with a request on its unix socket before it touches a lease: the
//! line read (`protocol::read_line`), decoded (`protocol::decode`) and checked (`Call::check`:
//! the IDs as the dispatcher validates them, the config as the plugin reads it), then the reply
//! written back. Any local process that can open the socket sends these bytes.
//!
//! Must hold: no panic; a refusal carries a code and a message; the reply is one line of JSON
//! (the framing the plugin reads) that the plugin's side decodes back to the same error.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../plugins/dhcp/src/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "../../plugins/dhcp/src/packet.rs"]
#[allow(dead_code)]
mod packet;
#[path = "../../plugins/dhcp/src/protocol.rs"]
#[allow(dead_code)]
mod protocol;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = protocol::read_line(data) else { return };
    assert!(line.len() <= protocol::MAX_MESSAGE && !line.contains(&b'\n'));
    let reply = match protocol::decode(&line).and_then(|call| call.check().map(|c| (call, c))) {
        Ok((call, checked)) => {
            if let protocol::Checked::Allocate(_, id) | protocol::Checked::Check(id) | protocol::Checked::Release(id) =
                &checked
            {
                assert!(id.len() <= 254 && id.starts_with(call.container_id.as_str()));
            }
            return;
        }
        Err(e) => {
            assert!(e.code.as_u32() != 0 && !e.msg.is_empty(), "{e:?}");
            protocol::Reply::err(&e)
        }
    };
    let out = serde_json::to_vec(&reply).expect("a reply encodes");
    assert!(!out.contains(&b'\n'), "a reply is one line");
    let back: protocol::Reply = serde_json::from_slice(&out).expect("a reply decodes");
    let (sent, got) = (reply.error.expect("an error reply"), back.error.expect("an error reply"));
    assert_eq!((sent.code, sent.msg, sent.details), (got.code, got.msg, got.details));
});
