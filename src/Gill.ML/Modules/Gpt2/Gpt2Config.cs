using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Gill.ML.Modules.Gpt2;

/// <summary>Configuration of a GPT-2 model (Hugging Face <c>GPT2Config</c> fields; defaults are those of gpt2).</summary>
public sealed record Gpt2Config : CausalLMConfig
{
    /// <inheritdoc />
    public override string ModelType => "gpt2";

    /// <summary><c>vocab_size</c>.</summary>
    public int VocabSize { get; init; } = 50257;

    /// <summary>Positions (<c>n_positions</c>).</summary>
    public int NPositions { get; init; } = 1024;

    /// <summary>Model width (<c>n_embd</c>).</summary>
    public int NEmbd { get; init; } = 768;

    /// <summary>Blocks (<c>n_layer</c>).</summary>
    public int NLayer { get; init; } = 12;

    /// <summary>Attention heads (<c>n_head</c>).</summary>
    public int NHead { get; init; } = 12;

    /// <summary>Feed-forward width (<c>n_inner</c>); null means 4 × n_embd.</summary>
    public int? NInner { get; init; }

    /// <summary><c>activation_function</c> (gelu_new for GPT-2).</summary>
    public string ActivationFunction { get; init; } = "gelu_new";

    /// <summary><c>resid_pdrop</c>.</summary>
    public double ResidPdrop { get; init; } = 0.1;

    /// <summary><c>embd_pdrop</c>.</summary>
    public double EmbdPdrop { get; init; } = 0.1;

    /// <summary><c>attn_pdrop</c>.</summary>
    public double AttnPdrop { get; init; } = 0.1;

    /// <summary><c>layer_norm_epsilon</c>.</summary>
    public double LayerNormEpsilon { get; init; } = 1e-5;

    /// <summary><c>initializer_range</c>.</summary>
    public double InitializerRange { get; init; } = 0.02;

    /// <summary><c>scale_attn_weights</c>: divide scores by √head_dim.</summary>
    public bool ScaleAttnWeights { get; init; } = true;

    /// <summary><c>scale_attn_by_inverse_layer_idx</c>: also divide scores by (layer index + 1).</summary>
    public bool ScaleAttnByInverseLayerIdx { get; init; }

    /// <summary><c>bos_token_id</c>.</summary>
    public int? BosTokenId { get; init; } = 50256;

    /// <summary><c>eos_token_id</c>.</summary>
    public int? EosTokenId { get; init; } = 50256;

    /// <summary><c>pad_token_id</c> (GPT-2 has none).</summary>
    public int? PadTokenId { get; init; }

    internal int Inner => NInner ?? 4 * NEmbd;

    /// <summary>Checks the values for consistency.</summary>
    public void Validate()
    {
        CausalLMCommon.RequirePositive(VocabSize, "vocab_size");
        CausalLMCommon.RequirePositive(NPositions, "n_positions");
        CausalLMCommon.RequirePositive(NEmbd, "n_embd");
        CausalLMCommon.RequirePositive(NLayer, "n_layer");
        CausalLMCommon.RequirePositive(NHead, "n_head");
        CausalLMCommon.RequirePositive(Inner, "n_inner");
        if (NEmbd % NHead != 0)
            throw new InvalidDataException($"config.json: n_embd {NEmbd} is not divisible by n_head {NHead}.");
        foreach (var (k, v) in new[] { ("resid_pdrop", ResidPdrop), ("embd_pdrop", EmbdPdrop), ("attn_pdrop", AttnPdrop) })
            if (v is < 0 or >= 1) throw new InvalidDataException($"config.json: '{k}' must be in [0, 1), found {v}.");
        CausalLMCommon.CheckActivation(ActivationFunction);
    }

    /// <summary>Reads a Hugging Face GPT-2 config.json object.</summary>
    public static Gpt2Config FromJson(JsonObject json, string source)
    {
        var c = new Gpt2Config
        {
            VocabSize = CausalLMCommon.GetInt(json, "vocab_size", source),
            NPositions = CausalLMCommon.GetInt(json, "n_positions", source),
            NEmbd = CausalLMCommon.GetInt(json, "n_embd", source),
            NLayer = CausalLMCommon.GetInt(json, "n_layer", source),
            NHead = CausalLMCommon.GetInt(json, "n_head", source),
            NInner = CausalLMCommon.GetOptionalInt(json, "n_inner"),
            ActivationFunction = CausalLMCommon.GetString(json, "activation_function", "gelu_new"),
            ResidPdrop = CausalLMCommon.GetDouble(json, "resid_pdrop", 0.1),
            EmbdPdrop = CausalLMCommon.GetDouble(json, "embd_pdrop", 0.1),
            AttnPdrop = CausalLMCommon.GetDouble(json, "attn_pdrop", 0.1),
            LayerNormEpsilon = CausalLMCommon.GetDouble(json, "layer_norm_epsilon", 1e-5),
            InitializerRange = CausalLMCommon.GetDouble(json, "initializer_range", 0.02),
            ScaleAttnWeights = CausalLMCommon.GetBool(json, "scale_attn_weights", true),
            ScaleAttnByInverseLayerIdx = CausalLMCommon.GetBool(json, "scale_attn_by_inverse_layer_idx", false),
            BosTokenId = CausalLMCommon.GetOptionalInt(json, "bos_token_id"),
            EosTokenId = CausalLMCommon.GetOptionalInt(json, "eos_token_id"),
            PadTokenId = CausalLMCommon.GetOptionalInt(json, "pad_token_id"),
        };
        try { c.Validate(); }
        catch (InvalidDataException e) { throw new InvalidDataException($"{e.Message} ({source})", e); }
        return c;
    }

    /// <inheritdoc />
    public override JsonObject ToJson(ScalarType dtype) => new()
    {
        ["model_type"] = "gpt2",
        ["architectures"] = new JsonArray("GPT2LMHeadModel"),
        ["vocab_size"] = VocabSize,
        ["n_positions"] = NPositions,
        ["n_ctx"] = NPositions,
        ["n_embd"] = NEmbd,
        ["n_layer"] = NLayer,
        ["n_head"] = NHead,
        ["n_inner"] = NInner,
        ["activation_function"] = ActivationFunction,
        ["resid_pdrop"] = ResidPdrop,
        ["embd_pdrop"] = EmbdPdrop,
        ["attn_pdrop"] = AttnPdrop,
        ["layer_norm_epsilon"] = LayerNormEpsilon,
        ["initializer_range"] = InitializerRange,
        ["scale_attn_weights"] = ScaleAttnWeights,
        ["scale_attn_by_inverse_layer_idx"] = ScaleAttnByInverseLayerIdx,
        ["bos_token_id"] = BosTokenId,
        ["eos_token_id"] = EosTokenId,
        ["pad_token_id"] = PadTokenId,
        ["tie_word_embeddings"] = true,
        ["torch_dtype"] = CausalLMCommon.DTypeName(dtype),
    };
}
