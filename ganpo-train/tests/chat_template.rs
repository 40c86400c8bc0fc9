//! Chat templates rendered by ganpo (minijinja) against transformers' `apply_chat_template` for
//! real templates: SmolLM2, Qwen3, Llama 3 (fixtures: tools/fixtures/train_fixtures.py).

use ganpo_train::data::{ChatTemplate, Message};
use serde_json::Value;

#[test]
fn real_templates_render_as_transformers_does() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = std::collections::BTreeSet::new();
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let template = ChatTemplate::new(fixture["templates"][name].as_str().unwrap()).unwrap();
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let got = template
            .render(
                &messages,
                case["add_generation_prompt"].as_bool().unwrap(),
                case["bos_token"].as_str(),
                case["eos_token"].as_str(),
            )
            .unwrap();
        assert_eq!(
            got,
            case["rendered"].as_str().unwrap(),
            "{name}: {messages:?}"
        );
        checked.insert(name.to_string());
    }
    assert_eq!(checked.len(), 3);
}

#[test]
fn template_errors_are_reported() {
    let t = ChatTemplate::new("{{ raise_exception('only user and assistant roles') }}").unwrap();
    let e = t.render(&[], false, None, None).unwrap_err();
    assert!(
        e.to_string().contains("only user and assistant roles"),
        "{e}"
    );
    assert!(ChatTemplate::new("{% for m in messages %}").is_err());
}
