//! Layer classes: which kind of weights a tensor holds.

/// The class of a layer, as `ggml_qat_layer_type_t` numbers them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum LayerClass {
    Embedding = 0,
    Attention = 1,
    Ffn = 2,
    LayerNorm = 3,
    AtomSpace = 4,
    Moses = 5,
    Ecan = 6,
}

impl LayerClass {
    pub const ALL: [LayerClass; 7] = [
        LayerClass::Embedding,
        LayerClass::Attention,
        LayerClass::Ffn,
        LayerClass::LayerNorm,
        LayerClass::AtomSpace,
        LayerClass::Moses,
        LayerClass::Ecan,
    ];

    /// The class with this C value, if any.
    pub fn from_c(v: i32) -> Option<LayerClass> {
        Self::ALL.get(usize::try_from(v).ok()?).copied()
    }

    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            LayerClass::Embedding => "embedding",
            LayerClass::Attention => "attention",
            LayerClass::Ffn => "ffn",
            LayerClass::LayerNorm => "layernorm",
            LayerClass::AtomSpace => "atomspace",
            LayerClass::Moses => "moses",
            LayerClass::Ecan => "ecan",
        }
    }
}
