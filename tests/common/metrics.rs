//! The operator's `GET /metrics` page read as Prometheus text: the one scrape of the suite
//! (`RelayServer::scrape`, `RelayServer::metric`).

/// The samples of a Prometheus text page, in the order of the page.
#[derive(Debug, Clone)]
pub struct Samples(pub Vec<(String, f64)>);

impl Samples {
    /// Reads a page line by line, checking it as it goes: every sample's metric family was
    /// declared by a `# TYPE` line before it (a counter, gauge or histogram), and every value is
    /// a number.
    pub fn parse(page: &str) -> Self {
        let mut declared: Vec<String> = Vec::new();
        let mut samples = Vec::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').expect("# TYPE NAME KIND");
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "unexpected type {kind} in {line}"
                );
                declared.push(family.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample is SERIES VALUE");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}"));
            let name = series.split('{').next().unwrap();
            assert!(
                declared
                    .iter()
                    .any(|family| name.starts_with(family.as_str())),
                "{name} has no # TYPE line before it"
            );
            samples.push((series.to_owned(), value));
        }
        Self(samples)
    }

    /// The value of one series, written as on the page (`relay_jobs{state="open"}`).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(name, _)| name == series)
            .map(|(_, value)| *value)
    }

    /// The value of one series, 0 when the page lacks it (a counter not yet counted).
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }

    pub fn has(&self, series: &str) -> bool {
        self.get(series).is_some()
    }
}
