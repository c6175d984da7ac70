//! Golden files of the JSON sent to nft (`tests/golden/<name>.json`). Regenerate after an intended
//! change with `UPDATE_GOLDEN=1 cargo test -p firewall`, and review the diff.

use serde_json::Value;

/// Asserts that `actual`, pretty-printed, is the golden file `name` (rewriting it first under
/// `UPDATE_GOLDEN`).
pub fn golden(name: &str, actual: &Value) {
    let path = format!("{}/tests/golden/{name}.json", env!("CARGO_MANIFEST_DIR"));
    // Written with sorted keys, so a regenerated file differs only where the content does.
    let rendered = serde_json::to_string_pretty(&sorted(actual)).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Compared as JSON: nft reads objects by key, so key order is not part of what is golden.
    let expected: Value = serde_json::from_str(&expected).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(actual, &expected, "{name} differs from {path}:\n{rendered}");
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}
