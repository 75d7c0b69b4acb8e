//! Config parsing and validation: any UTF-8 text either becomes a validated
//! config or is refused with errors; nothing panics.
//!
//! Follows `portcullis::config::load` without the file I/O: `parse`, then
//! `validate` of what parsed (load validates even when some entries failed to
//! parse, to report every error). `validate` only stats the files a config
//! names (certificates, error pages, working_dir); `base_dir` points at a
//! folder that does not exist so relative names never match real files.
//! `gateway::build_snapshot` is not fuzzed: it resolves host names, reads
//! certificates and spawns tasks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config;
use std::path::PathBuf;

fuzz_target!(|data: &[u8]| {
    // Config files are read with read_to_string: only UTF-8 reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (mut cfg, errors) = config::parse(text);
    for e in &errors {
        assert!(!e.message.is_empty(), "error without a message: {e:?}");
        assert!(!e.to_string().is_empty());
    }
    // load_str is parse with the errors as a Result.
    match config::load_str(text) {
        Ok(_) => assert!(errors.is_empty(), "load_str accepted what parse refused"),
        Err(e) => assert_eq!(e, errors, "load_str and parse disagree"),
    }
    cfg.base_dir = PathBuf::from("/nonexistent/portcullis-fuzz");
    match config::validate(cfg) {
        Ok(v) => {
            for w in &v.warnings {
                assert!(!w.message.is_empty(), "warning without a message: {w:?}");
            }
        }
        Err(errs) => {
            assert!(!errs.is_empty(), "validate refused without saying why");
            for e in &errs {
                assert!(!e.message.is_empty(), "error without a message: {e:?}");
            }
        }
    }
});
