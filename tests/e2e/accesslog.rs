//! Our access-log record and Azure's v2 sample read by the same code, with the
//! same field names and JSON types.

use crate::support::*;
use portcullis::accesslog::AccessRecord;
use serde_json::Value;

fn azure_sample() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/azure/azure-appgw-access-v2.docs-example.json"
    );
    let text = std::fs::read_to_string(path).expect("the Azure v2 sample in ../shared/testdata");
    serde_json::from_str(&text).expect("json")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_records_and_azure_v2_parse_alike() {
    let azure = azure_sample();
    let app = DemoApp::start();
    let port = free_port();
    let gw = Gateway::start("schema", &basic_config(port, &[app.addr.to_string()], ""));
    let r = get(local(port), "/").await;
    let ours = gw.record(&r.txid());

    // The same reader takes both.
    let a: AccessRecord = serde_json::from_value(azure.clone()).expect("Azure v2 parses");
    let o: AccessRecord = serde_json::from_value(ours.clone()).expect("our record parses");
    assert_eq!(a.properties.http_status, 200);
    assert_eq!(o.properties.http_status, 200);
    assert_eq!(a.properties.server_status, "200");

    // Every field Azure writes that we write too has the same JSON type.
    for top in [
        "timeStamp",
        "listenerName",
        "ruleName",
        "backendPoolName",
        "backendSettingName",
        "operationName",
        "category",
    ] {
        assert_eq!(kind(&azure[top]), kind(&ours[top]), "{top}");
    }
    assert_eq!(ours["operationName"], azure["operationName"]);
    assert_eq!(ours["category"], azure["category"]);
    let (ap, op) = (&azure["properties"], &ours["properties"]);
    let mut shared = 0;
    for (k, v) in ap.as_object().expect("object") {
        if matches!(
            k.as_str(),
            "WAFEvaluationTime"
                | "WAFMode"
                | "sslClientVerify"
                | "sslClientCertificateFingerprint"
                | "sslClientCertificateIssuerName"
        ) {
            continue; // WAF and client certificates are not part of portcullis
        }
        let ov = op.get(k).unwrap_or_else(|| panic!("we do not write `{k}`"));
        assert_eq!(kind(v), kind(ov), "type of `{k}`");
        shared += 1;
    }
    assert_eq!(
        shared, 26,
        "every Azure v2 field but the WAF and client-certificate ones"
    );
    // Transaction ids have Azure's shape.
    let id = op["transactionId"].as_str().expect("id");
    assert!(
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}
