using System.Text.Json;
using System.Text.Json.Nodes;

namespace Gill.ML.Modules.Clip;

/// <summary>
/// Configuration of a CLIP vision tower, with the field names and defaults of Hugging Face <c>CLIPVisionConfig</c>.
/// </summary>
public sealed record ClipVisionConfig
{
    /// <summary>Width of the transformer (<c>hidden_size</c>).</summary>
    public int HiddenSize { get; init; } = 768;
    /// <summary>Width of the MLP (<c>intermediate_size</c>).</summary>
    public int IntermediateSize { get; init; } = 3072;
    /// <summary>Size of the projected embedding (<c>projection_dim</c>).</summary>
    public int ProjectionDim { get; init; } = 512;
    /// <summary>Number of encoder layers (<c>num_hidden_layers</c>).</summary>
    public int NumHiddenLayers { get; init; } = 12;
    /// <summary>Number of attention heads (<c>num_attention_heads</c>).</summary>
    public int NumAttentionHeads { get; init; } = 12;
    /// <summary>Number of input channels (<c>num_channels</c>).</summary>
    public int NumChannels { get; init; } = 3;
    /// <summary>Input resolution (<c>image_size</c>).</summary>
    public int ImageSize { get; init; } = 224;
    /// <summary>Patch size of the convolutional patch embedding (<c>patch_size</c>).</summary>
    public int PatchSize { get; init; } = 32;
    /// <summary>MLP activation (<c>hidden_act</c>): <c>quick_gelu</c>, <c>gelu</c>, <c>gelu_new</c> or <c>relu</c>.</summary>
    public string HiddenAct { get; init; } = "quick_gelu";
    /// <summary>Layer-norm epsilon (<c>layer_norm_eps</c>).</summary>
    public double LayerNormEps { get; init; } = 1e-5;
    /// <summary>Standard deviation of the random initialisation (<c>initializer_range</c>).</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary>Scale of the random initialisation (<c>initializer_factor</c>).</summary>
    public double InitializerFactor { get; init; } = 1.0;

    /// <summary>Number of patches per side.</summary>
    public int PatchesPerSide => ImageSize / PatchSize;

    /// <summary>Number of positions: one class token plus the patches.</summary>
    public int NumPositions => PatchesPerSide * PatchesPerSide + 1;

    /// <summary>The configuration of openai/clip-vit-large-patch14's vision tower.</summary>
    public static ClipVisionConfig VitLargePatch14 => new()
    {
        HiddenSize = 1024, IntermediateSize = 4096, ProjectionDim = 768, NumHiddenLayers = 24, NumAttentionHeads = 16,
        ImageSize = 224, PatchSize = 14,
    };

    internal void Validate(string source)
    {
        ClipConfigJson.Require(HiddenSize > 0 && NumAttentionHeads > 0 && HiddenSize % NumAttentionHeads == 0, source,
            $"hidden_size {HiddenSize} must be a positive multiple of num_attention_heads {NumAttentionHeads}");
        ClipConfigJson.Require(IntermediateSize > 0 && NumHiddenLayers > 0 && ProjectionDim > 0 && NumChannels > 0, source,
            "intermediate_size, num_hidden_layers, projection_dim and num_channels must be positive");
        ClipConfigJson.Require(PatchSize > 0 && ImageSize >= PatchSize && ImageSize % PatchSize == 0, source,
            $"image_size {ImageSize} must be a positive multiple of patch_size {PatchSize}");
        ClipActivation.Check(HiddenAct, source);
    }

    internal static ClipVisionConfig FromJson(JsonObject o, string source)
    {
        var d = new ClipVisionConfig();
        var c = new ClipVisionConfig
        {
            HiddenSize = ClipConfigJson.Int(o, "hidden_size", d.HiddenSize, source),
            IntermediateSize = ClipConfigJson.Int(o, "intermediate_size", d.IntermediateSize, source),
            ProjectionDim = ClipConfigJson.Int(o, "projection_dim", d.ProjectionDim, source),
            NumHiddenLayers = ClipConfigJson.Int(o, "num_hidden_layers", d.NumHiddenLayers, source),
            NumAttentionHeads = ClipConfigJson.Int(o, "num_attention_heads", d.NumAttentionHeads, source),
            NumChannels = ClipConfigJson.Int(o, "num_channels", d.NumChannels, source),
            ImageSize = ClipConfigJson.Int(o, "image_size", d.ImageSize, source),
            PatchSize = ClipConfigJson.Int(o, "patch_size", d.PatchSize, source),
            HiddenAct = ClipConfigJson.Str(o, "hidden_act", d.HiddenAct, source),
            LayerNormEps = ClipConfigJson.Double(o, "layer_norm_eps", d.LayerNormEps, source),
            InitializerRange = ClipConfigJson.Double(o, "initializer_range", d.InitializerRange, source),
            InitializerFactor = ClipConfigJson.Double(o, "initializer_factor", d.InitializerFactor, source),
        };
        c.Validate(source);
        return c;
    }

    internal JsonObject ToJson() => new()
    {
        ["model_type"] = "clip_vision_model",
        ["hidden_size"] = HiddenSize,
        ["intermediate_size"] = IntermediateSize,
        ["projection_dim"] = ProjectionDim,
        ["num_hidden_layers"] = NumHiddenLayers,
        ["num_attention_heads"] = NumAttentionHeads,
        ["num_channels"] = NumChannels,
        ["image_size"] = ImageSize,
        ["patch_size"] = PatchSize,
        ["hidden_act"] = HiddenAct,
        ["layer_norm_eps"] = LayerNormEps,
        ["initializer_range"] = InitializerRange,
        ["initializer_factor"] = InitializerFactor,
    };
}

/// <summary>
/// Configuration of a CLIP text tower, with the field names and defaults of Hugging Face <c>CLIPTextConfig</c>.
/// </summary>
public sealed record ClipTextConfig
{
    /// <summary>Vocabulary size (<c>vocab_size</c>).</summary>
    public int VocabSize { get; init; } = 49408;
    /// <summary>Width of the transformer (<c>hidden_size</c>).</summary>
    public int HiddenSize { get; init; } = 512;
    /// <summary>Width of the MLP (<c>intermediate_size</c>).</summary>
    public int IntermediateSize { get; init; } = 2048;
    /// <summary>Size of the projected embedding (<c>projection_dim</c>).</summary>
    public int ProjectionDim { get; init; } = 512;
    /// <summary>Number of encoder layers (<c>num_hidden_layers</c>).</summary>
    public int NumHiddenLayers { get; init; } = 12;
    /// <summary>Number of attention heads (<c>num_attention_heads</c>).</summary>
    public int NumAttentionHeads { get; init; } = 8;
    /// <summary>Maximum sequence length (<c>max_position_embeddings</c>).</summary>
    public int MaxPositionEmbeddings { get; init; } = 77;
    /// <summary>MLP activation (<c>hidden_act</c>).</summary>
    public string HiddenAct { get; init; } = "quick_gelu";
    /// <summary>Layer-norm epsilon (<c>layer_norm_eps</c>).</summary>
    public double LayerNormEps { get; init; } = 1e-5;
    /// <summary>Standard deviation of the random initialisation (<c>initializer_range</c>).</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary>Scale of the random initialisation (<c>initializer_factor</c>).</summary>
    public double InitializerFactor { get; init; } = 1.0;
    /// <summary>Padding id (<c>pad_token_id</c>).</summary>
    public long PadTokenId { get; init; } = 1;
    /// <summary>Start-of-text id (<c>bos_token_id</c>).</summary>
    public long BosTokenId { get; init; } = 49406;
    /// <summary>
    /// End-of-text id (<c>eos_token_id</c>). The value 2 found in legacy openai configs means "pool at the largest id"
    /// (argmax of the input ids), as in Hugging Face; any other value pools at the first occurrence of this id.
    /// </summary>
    public long EosTokenId { get; init; } = 49407;

    /// <summary>The configuration of openai/clip-vit-large-patch14's text tower (also Stable Diffusion 1.x's text encoder).</summary>
    public static ClipTextConfig VitLargePatch14 => new()
    {
        HiddenSize = 768, IntermediateSize = 3072, ProjectionDim = 768, NumHiddenLayers = 12, NumAttentionHeads = 12,
        MaxPositionEmbeddings = 77, PadTokenId = 1, BosTokenId = 0, EosTokenId = 2,
    };

    internal void Validate(string source)
    {
        ClipConfigJson.Require(HiddenSize > 0 && NumAttentionHeads > 0 && HiddenSize % NumAttentionHeads == 0, source,
            $"hidden_size {HiddenSize} must be a positive multiple of num_attention_heads {NumAttentionHeads}");
        ClipConfigJson.Require(VocabSize > 0 && IntermediateSize > 0 && NumHiddenLayers > 0 && ProjectionDim > 0 && MaxPositionEmbeddings > 0, source,
            "vocab_size, intermediate_size, num_hidden_layers, projection_dim and max_position_embeddings must be positive");
        ClipActivation.Check(HiddenAct, source);
    }

    internal static ClipTextConfig FromJson(JsonObject o, string source)
    {
        var d = new ClipTextConfig();
        var c = new ClipTextConfig
        {
            VocabSize = ClipConfigJson.Int(o, "vocab_size", d.VocabSize, source),
            HiddenSize = ClipConfigJson.Int(o, "hidden_size", d.HiddenSize, source),
            IntermediateSize = ClipConfigJson.Int(o, "intermediate_size", d.IntermediateSize, source),
            ProjectionDim = ClipConfigJson.Int(o, "projection_dim", d.ProjectionDim, source),
            NumHiddenLayers = ClipConfigJson.Int(o, "num_hidden_layers", d.NumHiddenLayers, source),
            NumAttentionHeads = ClipConfigJson.Int(o, "num_attention_heads", d.NumAttentionHeads, source),
            MaxPositionEmbeddings = ClipConfigJson.Int(o, "max_position_embeddings", d.MaxPositionEmbeddings, source),
            HiddenAct = ClipConfigJson.Str(o, "hidden_act", d.HiddenAct, source),
            LayerNormEps = ClipConfigJson.Double(o, "layer_norm_eps", d.LayerNormEps, source),
            InitializerRange = ClipConfigJson.Double(o, "initializer_range", d.InitializerRange, source),
            InitializerFactor = ClipConfigJson.Double(o, "initializer_factor", d.InitializerFactor, source),
            PadTokenId = ClipConfigJson.Long(o, "pad_token_id", d.PadTokenId, source),
            BosTokenId = ClipConfigJson.Long(o, "bos_token_id", d.BosTokenId, source),
            EosTokenId = ClipConfigJson.Long(o, "eos_token_id", d.EosTokenId, source),
        };
        c.Validate(source);
        return c;
    }

    internal JsonObject ToJson() => new()
    {
        ["model_type"] = "clip_text_model",
        ["vocab_size"] = VocabSize,
        ["hidden_size"] = HiddenSize,
        ["intermediate_size"] = IntermediateSize,
        ["projection_dim"] = ProjectionDim,
        ["num_hidden_layers"] = NumHiddenLayers,
        ["num_attention_heads"] = NumAttentionHeads,
        ["max_position_embeddings"] = MaxPositionEmbeddings,
        ["hidden_act"] = HiddenAct,
        ["layer_norm_eps"] = LayerNormEps,
        ["initializer_range"] = InitializerRange,
        ["initializer_factor"] = InitializerFactor,
        ["pad_token_id"] = PadTokenId,
        ["bos_token_id"] = BosTokenId,
        ["eos_token_id"] = EosTokenId,
    };
}

/// <summary>
/// Configuration of a full CLIP model (Hugging Face <c>CLIPConfig</c>, <c>model_type</c> "clip"): both towers, the shared
/// projection size and the initial value of the learned log temperature.
/// </summary>
public sealed record ClipConfig
{
    /// <summary>The text tower.</summary>
    public ClipTextConfig Text { get; init; } = new();
    /// <summary>The vision tower.</summary>
    public ClipVisionConfig Vision { get; init; } = new();
    /// <summary>Size of the joint embedding space (<c>projection_dim</c>); both projections map to it.</summary>
    public int ProjectionDim { get; init; } = 512;
    /// <summary>Initial value of <c>logit_scale</c> (log of 1/0.07 by default).</summary>
    public double LogitScaleInitValue { get; init; } = 2.6592;

    /// <summary>The configuration of openai/clip-vit-large-patch14.</summary>
    public static ClipConfig VitLargePatch14 => new()
    {
        Text = ClipTextConfig.VitLargePatch14, Vision = ClipVisionConfig.VitLargePatch14, ProjectionDim = 768,
    };

    internal static ClipConfig FromJson(JsonObject o, string source)
    {
        int projection = ClipConfigJson.Int(o, "projection_dim", 512, source);
        var text = o["text_config"] as JsonObject ?? new JsonObject();
        var vision = o["vision_config"] as JsonObject ?? new JsonObject();
        var c = new ClipConfig
        {
            // CLIPModel builds both projections with the top-level projection_dim.
            Text = ClipTextConfig.FromJson(text, source + " (text_config)") with { ProjectionDim = projection },
            Vision = ClipVisionConfig.FromJson(vision, source + " (vision_config)") with { ProjectionDim = projection },
            ProjectionDim = projection,
            LogitScaleInitValue = ClipConfigJson.Double(o, "logit_scale_init_value", 2.6592, source),
        };
        return c;
    }

    internal JsonObject ToJson()
    {
        var text = Text.ToJson();
        var vision = Vision.ToJson();
        text["projection_dim"] = ProjectionDim;
        vision["projection_dim"] = ProjectionDim;
        return new JsonObject
        {
            ["model_type"] = "clip",
            ["architectures"] = new JsonArray("CLIPModel"),
            ["projection_dim"] = ProjectionDim,
            ["logit_scale_init_value"] = LogitScaleInitValue,
            ["initializer_factor"] = 1.0,
            ["text_config"] = text,
            ["vision_config"] = vision,
        };
    }
}

/// <summary>Reading and writing Hugging Face CLIP config.json files.</summary>
internal static class ClipConfigJson
{
    public const string ConfigFile = "config.json";

    /// <summary>Reads <c>folder/config.json</c> and returns its JSON object and <c>model_type</c>.</summary>
    public static (JsonObject Root, string ModelType, string Path) Read(string folder)
    {
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"CLIP model folder not found: '{folder}'.");
        var path = System.IO.Path.Combine(folder, ConfigFile);
        if (!File.Exists(path))
            throw new FileNotFoundException($"CLIP model folder '{folder}' has no {ConfigFile}.", path);
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e); }
        if (node is not JsonObject root) throw new InvalidDataException($"'{path}' does not hold a JSON object.");
        var type = root["model_type"]?.GetValue<string>() ?? throw new InvalidDataException($"'{path}' has no \"model_type\".");
        return (root, type, path);
    }

    /// <summary>Writes a JSON object atomically (temporary file, then rename).</summary>
    public static void WriteAtomic(string path, JsonNode node)
    {
        var dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllText(tmp, node.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            if (File.Exists(tmp)) File.Delete(tmp);
            throw;
        }
    }

    public static void Require(bool ok, string source, string what)
    {
        if (!ok) throw new InvalidDataException($"Invalid CLIP configuration in '{source}': {what}.");
    }

    public static int Int(JsonObject o, string key, int fallback, string source) => (int)Long(o, key, fallback, source);

    public static long Long(JsonObject o, string key, long fallback, string source)
    {
        var n = o[key];
        if (n is null) return fallback;
        try { return n.GetValue<long>(); }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        { throw new InvalidDataException($"'{source}': \"{key}\" must be an integer, found {n.ToJsonString()}.", e); }
    }

    public static double Double(JsonObject o, string key, double fallback, string source)
    {
        var n = o[key];
        if (n is null) return fallback;
        try { return n.GetValue<double>(); }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        { throw new InvalidDataException($"'{source}': \"{key}\" must be a number, found {n.ToJsonString()}.", e); }
    }

    public static string Str(JsonObject o, string key, string fallback, string source)
    {
        var n = o[key];
        if (n is null) return fallback;
        try { return n.GetValue<string>(); }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        { throw new InvalidDataException($"'{source}': \"{key}\" must be a string, found {n.ToJsonString()}.", e); }
    }
}
