//! Analysis recipes: any text is parsed, and a recipe that parses is computed over a small
//! dataset (nothing is written), giving tables or a message, never a panic.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rows = "patient_id,sex,age,has_event,count,date\n\
                1,female,34,T,3,2020-01-01\n2,male,71,F,0,2021-06-30\n3,female,,T,12,\n\
                4,unknown,5,F,1,2019-12-31\n5,male,99,T,7,2020-02-29\n6,female,34,F,2,2020-01-01\n";
    std::fs::write(dir.path().join("data.csv"), rows).unwrap();
    Fixture { path: dir.path().to_path_buf(), _dir: dir }
}

thread_local! {
    static FIXTURE: Fixture = fixture();
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut recipe) = quarry_analysis::recipe::parse(text, "recipe.yaml") else { return };
    // Always the fixture's dataset: the recipe is what is fuzzed, not the file system.
    recipe.input = "data.csv".into();
    FIXTURE.with(|f| {
        let _ = quarry_analysis::compute(&recipe, "recipe.yaml", &f.path);
    });
});
