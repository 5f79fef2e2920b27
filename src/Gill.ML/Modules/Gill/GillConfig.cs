using System.Text.Json;
using System.Text.Json.Serialization;

namespace Gill.ML;

/// <summary>
/// Architecture of the generation mapper f_ω that turns the r [IMG] hidden states into the L×m conditioning sequence
/// of the image generator. <see cref="GillMapper"/> is GILL's; the others are the paper's ablation baselines (Table 3).
/// </summary>
[JsonConverter(typeof(JsonStringEnumConverter<GillMapperKind>))]
public enum GillMapperKind
{
    /// <summary>
    /// Linear: a per-token <c>Linear(D, m)</c>, a linear projection of the token axis r → L, then a per-token
    /// <c>Linear(m, out)</c>. No non-linearity anywhere, so the whole map is linear.
    /// </summary>
    [JsonStringEnumMemberName("linear")] Linear,

    /// <summary>
    /// 3-layer MLP with LeakyReLU: <c>Linear(D, m)</c> → LeakyReLU → <c>Linear(m, m)</c> → LeakyReLU per token, the
    /// token projection r → L, then <c>Linear(m, out)</c>.
    /// </summary>
    [JsonStringEnumMemberName("mlp")] Mlp,

    /// <summary>
    /// Bidirectional Transformer encoder: <c>Linear(D, m)</c>, a pre-LN encoder (same layer as GILLMapper's encoder,
    /// no mask, no positions) over the r states with a final LayerNorm, the token projection r → L, then
    /// <c>Linear(m, out)</c>.
    /// </summary>
    [JsonStringEnumMemberName("encoder_only_transformer")] EncoderOnlyTransformer,

    /// <summary>
    /// GILLMapper: <c>Linear(D, m)</c>, then an encoder–decoder Transformer whose decoder reads L learned queries
    /// (cross-attending to the encoded r states), then <c>Linear(m, out)</c>.
    /// </summary>
    [JsonStringEnumMemberName("gill_mapper")] GillMapper,
}

/// <summary>
/// GILL architecture configuration: the sizes of the trainable parts and the [IMG] token ids. Reads and writes the
/// original <c>model_args.json</c> keys (snake_case); sizes that the original derived from the backbones are extra
/// keys with defaults for OPT-6.7B + CLIP ViT-L/14. Training options are kept apart (see
/// <see cref="Training.GillTrainingOptions"/>). The LM hidden size is read from the language model itself.
/// </summary>
public sealed class GillConfig
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    /// <summary>Hugging Face id of the language model the heads were trained on (informational).</summary>
    [JsonPropertyName("opt_version")] public string? OptVersion { get; set; } = "facebook/opt-6.7b";

    /// <summary>Hugging Face id of the visual encoder (informational).</summary>
    [JsonPropertyName("visual_encoder")] public string? VisualEncoder { get; set; } = "openai/clip-vit-large-patch14";

    /// <summary>k: number of soft visual tokens W_cap produces per image (GILL 4, FROMAGe 1).</summary>
    [JsonPropertyName("n_visual_tokens")] public int NVisualTokens { get; set; } = 4;

    /// <summary>p: size of the shared retrieval space.</summary>
    [JsonPropertyName("ret_emb_dim")] public int RetEmbDim { get; set; } = 256;

    /// <summary>Width of each generated conditioning vector (Stable Diffusion v1.5: 768).</summary>
    [JsonPropertyName("gen_emb_dim")] public int GenEmbDim { get; set; } = 768;

    /// <summary>Generation mapper architecture (<c>text_fc_mode</c>).</summary>
    [JsonPropertyName("text_fc_mode")] public GillMapperKind TextFcMode { get; set; } = GillMapperKind.GillMapper;

    /// <summary>Retrieval text head mode; only <c>linear</c> exists in GILL.</summary>
    [JsonPropertyName("ret_text_fc_mode")] public string RetTextFcMode { get; set; } = "linear";

    /// <summary>r: number of [IMG] tokens (GILL 8, FROMAGe 1).</summary>
    [JsonPropertyName("num_tokens")] public int NumTokens { get; set; } = 8;

    /// <summary>The original file's name for <see cref="NumTokens"/> on the generation side (read, checked, kept).</summary>
    [JsonPropertyName("num_gen_tokens")] public int? NumGenTokens { get; set; }

    /// <summary>The original file's name for <see cref="NumTokens"/> on the retrieval side (read, checked, kept).</summary>
    [JsonPropertyName("num_ret_tokens")] public int? NumRetTokens { get; set; }

    /// <summary>L: number of conditioning vectors the mapper emits (Stable Diffusion: 77).</summary>
    [JsonPropertyName("num_clip_tokens")] public int NumClipTokens { get; set; } = 77;

    /// <summary>Token ids of [IMG0..r-1] used for retrieval; GILL shares them with generation.</summary>
    [JsonPropertyName("retrieval_token_idx")] public int[] RetrievalTokenIdx { get; set; } = DefaultImgIds();

    /// <summary>Token ids of [IMG0..r-1] used for generation; must equal <see cref="RetrievalTokenIdx"/>.</summary>
    [JsonPropertyName("gen_token_idx")] public int[] GenTokenIdx { get; set; } = DefaultImgIds();

    /// <summary>Whether retrieval and generation share the [IMG] tokens (only <c>true</c> is supported, as in GILL).</summary>
    [JsonPropertyName("share_ret_gen")] public bool ShareRetGen { get; set; } = true;

    /// <summary>Dv: width of the visual feature (CLIP ViT-L/14 pooled output: 1024).</summary>
    [JsonPropertyName("visual_hidden_size")] public int VisualHiddenSize { get; set; } = 1024;

    /// <summary>m: hidden width of the generation mapper.</summary>
    [JsonPropertyName("mapper_hidden_dim")] public int MapperHiddenDim { get; set; } = 512;

    /// <summary>Attention heads of the mapper's Transformer layers.</summary>
    [JsonPropertyName("mapper_num_heads")] public int MapperNumHeads { get; set; } = 4;

    /// <summary>Encoder layers of the mapper (GILLMapper and the encoder-only ablation).</summary>
    [JsonPropertyName("mapper_num_encoder_layers")] public int MapperNumEncoderLayers { get; set; } = 4;

    /// <summary>Decoder layers of the GILLMapper.</summary>
    [JsonPropertyName("mapper_num_decoder_layers")] public int MapperNumDecoderLayers { get; set; } = 4;

    /// <summary>Feed-forward width of the mapper's Transformer layers; null means 4 × <see cref="MapperHiddenDim"/>.</summary>
    [JsonPropertyName("mapper_ffn_dim")] public int? MapperFfnDim { get; set; }

    /// <summary>Padding token id; null means the language model's.</summary>
    [JsonPropertyName("pad_token_id")] public int? PadTokenId { get; set; }

    /// <summary>Beginning-of-sequence token id; null means the language model's.</summary>
    [JsonPropertyName("bos_token_id")] public int? BosTokenId { get; set; }

    /// <summary>The [IMG0..r-1] ids (shared by retrieval and generation).</summary>
    [JsonIgnore] public IReadOnlyList<int> ImgTokenIds => RetrievalTokenIdx;

    /// <summary>Effective feed-forward width of the mapper's Transformer layers.</summary>
    [JsonIgnore] public int EffectiveMapperFfnDim => MapperFfnDim ?? 4 * MapperHiddenDim;

    private static int[] DefaultImgIds() => Enumerable.Range(50266, 8).ToArray();

    /// <summary>GILL as released: OPT-6.7B, CLIP ViT-L/14, k=4, r=8, GILLMapper to 77×768.</summary>
    public static GillConfig Default() => new();

    /// <summary>
    /// FROMAGe-style sizes: one visual token and a single retrieval token ([RET], id 50266). The generation mapper
    /// still exists; give the generation loss weight 0 to train retrieval and captioning only.
    /// </summary>
    public static GillConfig Fromage() => new()
    {
        NVisualTokens = 1,
        NumTokens = 1,
        RetrievalTokenIdx = new[] { 50266 },
        GenTokenIdx = new[] { 50266 },
    };

    /// <summary>Checks every value, throwing <see cref="ArgumentException"/> that names the bad key.</summary>
    public void Validate()
    {
        static void Positive(int v, string key)
        {
            if (v <= 0) throw new ArgumentOutOfRangeException(key, v, $"GillConfig '{key}' must be positive.");
        }
        Positive(NVisualTokens, "n_visual_tokens");
        Positive(RetEmbDim, "ret_emb_dim");
        Positive(GenEmbDim, "gen_emb_dim");
        Positive(NumTokens, "num_tokens");
        Positive(NumClipTokens, "num_clip_tokens");
        Positive(VisualHiddenSize, "visual_hidden_size");
        Positive(MapperHiddenDim, "mapper_hidden_dim");
        Positive(MapperNumHeads, "mapper_num_heads");
        Positive(MapperNumEncoderLayers, "mapper_num_encoder_layers");
        Positive(MapperNumDecoderLayers, "mapper_num_decoder_layers");
        if (MapperFfnDim is { } f) Positive(f, "mapper_ffn_dim");
        if (MapperHiddenDim % MapperNumHeads != 0)
            throw new ArgumentException($"GillConfig 'mapper_hidden_dim' ({MapperHiddenDim}) must be divisible by 'mapper_num_heads' ({MapperNumHeads}).");
        if (!string.Equals(RetTextFcMode, "linear", StringComparison.Ordinal))
            throw new ArgumentException($"GillConfig 'ret_text_fc_mode' must be 'linear' (the only retrieval head GILL defines), got '{RetTextFcMode}'.");
        if (NumGenTokens is { } g && g != NumTokens)
            throw new ArgumentException($"GillConfig 'num_gen_tokens' ({g}) differs from 'num_tokens' ({NumTokens}); retrieval and generation share the [IMG] tokens.");
        if (NumRetTokens is { } rt && rt != NumTokens)
            throw new ArgumentException($"GillConfig 'num_ret_tokens' ({rt}) differs from 'num_tokens' ({NumTokens}); retrieval and generation share the [IMG] tokens.");
        if (!ShareRetGen)
            throw new ArgumentException("GillConfig 'share_ret_gen' must be true: retrieval and generation use the same [IMG] tokens.");
        if (RetrievalTokenIdx is null || RetrievalTokenIdx.Length != NumTokens)
            throw new ArgumentException($"GillConfig 'retrieval_token_idx' must list exactly num_tokens = {NumTokens} ids, got {RetrievalTokenIdx?.Length ?? 0}.");
        if (GenTokenIdx is null || !GenTokenIdx.SequenceEqual(RetrievalTokenIdx))
            throw new ArgumentException("GillConfig 'gen_token_idx' must equal 'retrieval_token_idx' (shared [IMG] tokens).");
        if (RetrievalTokenIdx.Any(i => i < 0))
            throw new ArgumentException("GillConfig 'retrieval_token_idx' contains a negative id.");
        if (RetrievalTokenIdx.Distinct().Count() != RetrievalTokenIdx.Length)
            throw new ArgumentException("GillConfig 'retrieval_token_idx' contains duplicate ids.");
        if (PadTokenId is { } p && RetrievalTokenIdx.Contains(p))
            throw new ArgumentException($"GillConfig 'pad_token_id' ({p}) is also an [IMG] token id.");
        if (BosTokenId is { } b && RetrievalTokenIdx.Contains(b))
            throw new ArgumentException($"GillConfig 'bos_token_id' ({b}) is also an [IMG] token id.");
    }

    /// <summary>Serialises to JSON (snake_case keys, as <c>model_args.json</c>).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>
    /// Parses a config. An original <c>model_args.json</c> (which says <c>num_gen_tokens</c>/<c>num_ret_tokens</c>
    /// instead of <c>num_tokens</c>) is accepted; unknown keys are ignored. The result is validated.
    /// </summary>
    public static GillConfig FromJson(string json)
    {
        GillConfig? config;
        bool hasNumTokens;
        try
        {
            config = JsonSerializer.Deserialize<GillConfig>(json, JsonOptions);
            using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
            hasNumTokens = doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("num_tokens", out _);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Invalid GILL config JSON: {e.Message}", e);
        }
        if (config is null) throw new InvalidDataException("Invalid GILL config JSON: the document is null.");
        if (!hasNumTokens && (config.NumGenTokens ?? config.NumRetTokens) is { } n) config.NumTokens = n;
        config.Validate();
        return config;
    }

    /// <summary>Reads a config file (<c>model_args.json</c> or one written by <see cref="Save"/>).</summary>
    public static GillConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"GILL config file not found: '{path}'.", path);
        try
        {
            return FromJson(File.ReadAllText(path));
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{e.Message} (file '{path}')", e);
        }
    }

    /// <summary>Writes the config atomically (temporary file, then rename).</summary>
    public void Save(string path)
    {
        Validate();
        Training.AtomicFile.WriteAllText(path, ToJson());
    }

    /// <summary>A deep copy.</summary>
    public GillConfig Clone() => FromJson(ToJson());
}
