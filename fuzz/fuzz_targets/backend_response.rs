//! The backend client's reading of answers (`h1client.rs`): arbitrary bytes as a
//! backend's answer, read as after a GET and after a HEAD. It must never panic,
//! never produce more body than it was given, answer a HEAD without a body, and
//! when it would reuse the connection, know where the answer ends: bytes that
//! follow a complete reusable answer do not change its body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::gateway::h1client::decode_answer;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = decode_answer(data, false) {
        assert!(a.body.len() <= data.len());
        if a.reusable && a.complete {
            let mut more = data.to_vec();
            more.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnext");
            let b = decode_answer(&more, false).expect("same head, same framing");
            assert_eq!(a.body, b.body, "the end of a reusable answer moved");
        }
    }
    if let Ok(a) = decode_answer(data, true) {
        assert!(a.body.is_empty());
        assert!(a.complete);
    }
});
