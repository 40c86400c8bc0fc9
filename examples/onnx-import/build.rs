//! Generates burn modules from the committed ONNX exports (burn-onnx code generation): GPT-NeoX,
//! an architecture ganpo has no loader for, and the tiny Llama that ganpo's own loader reads too
//! (so both ONNX paths can be compared on one model).

use burn_onnx::{LoadStrategy, ModelGen};

const MODELS: [&str; 2] = ["gpt_neox", "llama"];

fn main() {
    let fixtures = "../../ganpo-models/tests/fixtures/onnx";
    for name in MODELS {
        let input = format!("{fixtures}/{name}/model.onnx");
        println!("cargo:rerun-if-changed={input}");
        // Each model in its own folder: the generated file is named after the input file.
        ModelGen::new()
            .input(&input)
            .out_dir(&format!("{name}/"))
            .load_strategy(LoadStrategy::Embedded)
            .run_from_script();
        // The sizes `CausalLm` reports, from the export's config.json.
        let config = format!("{fixtures}/{name}/config.json");
        println!("cargo:rerun-if-changed={config}");
        let text = std::fs::read_to_string(&config).expect("config.json of the export");
        let json: serde_json::Value = serde_json::from_str(&text).expect("config.json parses");
        let size = |key: &str| {
            json[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{config}: `{key}` must be an integer"))
        };
        let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join(name);
        std::fs::write(
            out.join("sizes.rs"),
            format!(
                "pub const HIDDEN_SIZE: usize = {};\npub const VOCAB_SIZE: usize = {};\n",
                size("hidden_size"),
                size("vocab_size")
            ),
        )
        .expect("write sizes.rs");
    }
}
