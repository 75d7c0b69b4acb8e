//! The access-log reader: a line is parsed as an `AccessRecord` (our records and
//! Azure's v2 records alike). A line that parses must survive a round trip:
//! serialize, parse again, get an equal record, and the second serialization
//! is byte-identical to the first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::accesslog::AccessRecord;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Readers take one record per line (JSON Lines); a pretty-printed record,
    // as in Azure's docs, is one document over several lines.
    if text.contains('\n') {
        round_trip(text);
    }
    for line in text.lines() {
        round_trip(line);
    }
});

fn round_trip(line: &str) {
    let Ok(record) = serde_json::from_str::<AccessRecord>(line) else {
        return;
    };
    let written = serde_json::to_string(&record).expect("a parsed record serializes");
    let again: AccessRecord = match serde_json::from_str(&written) {
        Ok(r) => r,
        Err(e) => panic!("our own output does not parse: {e}\ninput: {line}\nwritten: {written}"),
    };
    assert_eq!(
        record, again,
        "round trip changed the record\ninput: {line}\nwritten: {written}"
    );
    let rewritten = serde_json::to_string(&again).expect("serializes");
    assert_eq!(written, rewritten, "serialization is not stable");
}
