using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Gill.ML.Modules.Opt;

/// <summary>Configuration of an OPT model (Hugging Face <c>OPTConfig</c> fields; defaults are the Hugging Face defaults).</summary>
public sealed record OptConfig : CausalLMConfig
{
    /// <inheritdoc />
    public override string ModelType => "opt";

    /// <summary>Vocabulary rows (<c>vocab_size</c>).</summary>
    public int VocabSize { get; init; } = 50272;

    /// <summary>Model width (<c>hidden_size</c>).</summary>
    public int HiddenSize { get; init; } = 768;

    /// <summary>Feed-forward width (<c>ffn_dim</c>).</summary>
    public int FfnDim { get; init; } = 3072;

    /// <summary>Decoder layers (<c>num_hidden_layers</c>).</summary>
    public int NumHiddenLayers { get; init; } = 12;

    /// <summary>Attention heads (<c>num_attention_heads</c>).</summary>
    public int NumAttentionHeads { get; init; } = 12;

    /// <summary>Positions (<c>max_position_embeddings</c>); the learned table has two more rows (offset 2).</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <summary>Width of the token embeddings (<c>word_embed_proj_dim</c>); differs from <see cref="HiddenSize"/> in opt-350m (project_in/out).</summary>
    public int WordEmbedProjDim { get; init; } = 768;

    /// <summary>Pre-LN when true; post-LN without a final layer norm when false (opt-350m).</summary>
    public bool DoLayerNormBefore { get; init; } = true;

    /// <summary>Drops the final layer norm even with pre-LN (<c>_remove_final_layer_norm</c>, old checkpoints).</summary>
    public bool RemoveFinalLayerNorm { get; init; }

    /// <summary><c>activation_function</c> of the feed-forward block.</summary>
    public string ActivationFunction { get; init; } = "relu";

    /// <summary>Biases in attention projections and feed-forward layers (<c>enable_bias</c>).</summary>
    public bool EnableBias { get; init; } = true;

    /// <summary>Layer norms with weight and bias (<c>layer_norm_elementwise_affine</c>).</summary>
    public bool LayerNormElementwiseAffine { get; init; } = true;

    /// <summary>Residual dropout probability (<c>dropout</c>), active only in training mode.</summary>
    public double Dropout { get; init; } = 0.1;

    /// <summary>Attention-probability dropout (<c>attention_dropout</c>), active only in training mode.</summary>
    public double AttentionDropout { get; init; }

    /// <summary>Standard deviation of the initialisation of a fresh model (<c>init_std</c>).</summary>
    public double InitStd { get; init; } = 0.02;

    /// <summary><c>pad_token_id</c>.</summary>
    public int? PadTokenId { get; init; } = 1;

    /// <summary><c>bos_token_id</c>.</summary>
    public int? BosTokenId { get; init; } = 2;

    /// <summary><c>eos_token_id</c>.</summary>
    public int? EosTokenId { get; init; } = 2;

    /// <summary>Checks the values for consistency.</summary>
    public void Validate()
    {
        CausalLMCommon.RequirePositive(VocabSize, "vocab_size");
        CausalLMCommon.RequirePositive(HiddenSize, "hidden_size");
        CausalLMCommon.RequirePositive(FfnDim, "ffn_dim");
        CausalLMCommon.RequirePositive(NumHiddenLayers, "num_hidden_layers");
        CausalLMCommon.RequirePositive(NumAttentionHeads, "num_attention_heads");
        CausalLMCommon.RequirePositive(MaxPositionEmbeddings, "max_position_embeddings");
        CausalLMCommon.RequirePositive(WordEmbedProjDim, "word_embed_proj_dim");
        if (HiddenSize % NumAttentionHeads != 0)
            throw new InvalidDataException($"config.json: hidden_size {HiddenSize} is not divisible by num_attention_heads {NumAttentionHeads}.");
        if (Dropout is < 0 or >= 1 || AttentionDropout is < 0 or >= 1)
            throw new InvalidDataException($"config.json: dropout probabilities must be in [0, 1), found dropout {Dropout}, attention_dropout {AttentionDropout}.");
        CausalLMCommon.CheckActivation(ActivationFunction);
    }

    /// <summary>Whether the decoder ends with a final layer norm.</summary>
    internal bool HasFinalLayerNorm => DoLayerNormBefore && !RemoveFinalLayerNorm;

    /// <summary>Reads a Hugging Face OPT config.json object.</summary>
    public static OptConfig FromJson(JsonObject json, string source)
    {
        int hidden = CausalLMCommon.GetInt(json, "hidden_size", source);
        var c = new OptConfig
        {
            VocabSize = CausalLMCommon.GetInt(json, "vocab_size", source),
            HiddenSize = hidden,
            FfnDim = CausalLMCommon.GetInt(json, "ffn_dim", source),
            NumHiddenLayers = CausalLMCommon.GetInt(json, "num_hidden_layers", source),
            NumAttentionHeads = CausalLMCommon.GetInt(json, "num_attention_heads", source),
            MaxPositionEmbeddings = CausalLMCommon.GetInt(json, "max_position_embeddings", source, 2048),
            WordEmbedProjDim = CausalLMCommon.GetOptionalInt(json, "word_embed_proj_dim") ?? hidden,
            DoLayerNormBefore = CausalLMCommon.GetBool(json, "do_layer_norm_before", true),
            RemoveFinalLayerNorm = CausalLMCommon.GetBool(json, "_remove_final_layer_norm", false),
            ActivationFunction = CausalLMCommon.GetString(json, "activation_function", "relu"),
            EnableBias = CausalLMCommon.GetBool(json, "enable_bias", true),
            LayerNormElementwiseAffine = CausalLMCommon.GetBool(json, "layer_norm_elementwise_affine", true),
            Dropout = CausalLMCommon.GetDouble(json, "dropout", 0.1),
            AttentionDropout = CausalLMCommon.GetDouble(json, "attention_dropout", 0.0),
            InitStd = CausalLMCommon.GetDouble(json, "init_std", 0.02),
            PadTokenId = CausalLMCommon.GetOptionalInt(json, "pad_token_id"),
            BosTokenId = CausalLMCommon.GetOptionalInt(json, "bos_token_id"),
            EosTokenId = CausalLMCommon.GetOptionalInt(json, "eos_token_id"),
        };
        try { c.Validate(); }
        catch (InvalidDataException e) { throw new InvalidDataException($"{e.Message} ({source})", e); }
        return c;
    }

    /// <inheritdoc />
    public override JsonObject ToJson(ScalarType dtype) => new()
    {
        ["model_type"] = "opt",
        ["architectures"] = new JsonArray("OPTForCausalLM"),
        ["vocab_size"] = VocabSize,
        ["hidden_size"] = HiddenSize,
        ["ffn_dim"] = FfnDim,
        ["num_hidden_layers"] = NumHiddenLayers,
        ["num_attention_heads"] = NumAttentionHeads,
        ["max_position_embeddings"] = MaxPositionEmbeddings,
        ["word_embed_proj_dim"] = WordEmbedProjDim,
        ["do_layer_norm_before"] = DoLayerNormBefore,
        ["_remove_final_layer_norm"] = RemoveFinalLayerNorm,
        ["activation_function"] = ActivationFunction,
        ["enable_bias"] = EnableBias,
        ["layer_norm_elementwise_affine"] = LayerNormElementwiseAffine,
        ["dropout"] = Dropout,
        ["attention_dropout"] = AttentionDropout,
        ["init_std"] = InitStd,
        ["pad_token_id"] = PadTokenId,
        ["bos_token_id"] = BosTokenId,
        ["eos_token_id"] = EosTokenId,
        ["tie_word_embeddings"] = true,
        ["torch_dtype"] = CausalLMCommon.DTypeName(dtype),
    };
}
