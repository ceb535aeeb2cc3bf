//! tlsgate's client side against tlsgate's server side: every protocol agrees on the upgrade,
//! whatever the read sizes.

use crate::{ClientSide, Protocol, ServerSide, Step};

#[test]
fn client_side_and_server_side_agree_for_every_protocol() {
    for p in Protocol::ALL {
        for chunk in [1, 3, 4096] {
            let mut server = ServerSide::new(p, "mx.example");
            let mut client = ClientSide::new(p, "gate.example");
            for _ in 0..10_000 {
                let to_server = client.take_output();
                for c in to_server.chunks(chunk) {
                    server.receive(c).unwrap_or_else(|e| panic!("{p}: {e}"));
                }
                let to_client = server.take_output();
                for c in to_client.chunks(chunk) {
                    client.receive(c).unwrap_or_else(|e| panic!("{p}: {e}"));
                }
                if client.state() == Step::StartTls {
                    break;
                }
            }
            assert_eq!((client.state(), server.state()), (Step::StartTls, Step::StartTls), "{p}");
        }
    }
}
