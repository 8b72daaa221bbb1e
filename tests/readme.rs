//! README.md stays true: every broker setting and every advertised API version range appears
//! in it, with the defaults and ranges the code uses.

use gregor::api::SUPPORTED;
use gregor::config::BROKER_CONFIGS;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

#[test]
fn every_setting_is_documented_with_its_default() {
    let readme = readme();
    for def in BROKER_CONFIGS {
        let row = format!("| `{}` | {} |", def.name, def.default);
        assert!(
            readme.contains(&row),
            "README.md lacks the row starting {row}"
        );
    }
}

#[test]
fn every_api_is_documented_with_its_versions() {
    let readme = readme();
    for (key, range) in SUPPORTED {
        let row = format!("| {} | {}–{} |", *key as i16, range.min, range.max);
        assert!(readme.contains(&row), "README.md lacks {key:?} as '{row}'");
    }
}
