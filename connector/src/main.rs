//! `destination-deeplake`: the Airbyte destination. Only `spec` is answered for now;
//! `check` and `write` arrive with the connector issue.

fn main() -> anyhow::Result<()> {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    let msg = match cmd.as_str() {
        "spec" => {
            serde_json::json!({"type": "SPEC", "spec": {"connectionSpecification": {"type": "object", "properties": {"destination_path": {"type": "string"}}}}})
        }
        other => {
            serde_json::json!({"type": "TRACE", "trace": {"type": "ERROR", "emitted_at": 0, "error": {"message": format!("command {other:?} is not implemented yet"), "failure_type": "system_error"}}})
        }
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{msg}")?;
    Ok(())
}
