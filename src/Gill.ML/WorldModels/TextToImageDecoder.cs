using System.Text.Json;
using System.Text.Json.Serialization;
using Gill.ML.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Gill.ML.WorldModels;

/// <summary>
/// Architecture of the shapes world's text-to-image decoder: a grid of learned queries cross-attends to the frozen text
/// encoder's full hidden-state sequence [L, m] (as Stable Diffusion's UNet does), then a convolutional upsampler draws the
/// image. Deterministic: one forward pass per image.
/// </summary>
public sealed record TextToImageDecoderConfig
{
    /// <summary>Marker written to config.json.</summary>
    [JsonPropertyName("model_type")] public string ModelType { get; init; } = "gill_world_decoder";

    /// <summary>Number of conditioning tokens L (the text encoder's maximum length).</summary>
    [JsonPropertyName("cond_tokens")] public int CondTokens { get; init; } = 16;

    /// <summary>Width m of each conditioning token (the text encoder's hidden size).</summary>
    [JsonPropertyName("cond_dim")] public int CondDim { get; init; } = 128;

    /// <summary>Output image side in pixels (a power of two times <see cref="GridSize"/>).</summary>
    [JsonPropertyName("image_size")] public int ImageSize { get; init; } = 32;

    /// <summary>Side of the query grid (the first feature map).</summary>
    [JsonPropertyName("grid_size")] public int GridSize { get; init; } = 4;

    /// <summary>Width of the queries and attention layers.</summary>
    [JsonPropertyName("hidden_dim")] public int HiddenDim { get; init; } = 128;

    /// <summary>Attention heads.</summary>
    [JsonPropertyName("num_heads")] public int NumHeads { get; init; } = 4;

    /// <summary>Number of (cross-attention, self-attention, feed-forward) blocks.</summary>
    [JsonPropertyName("num_layers")] public int NumLayers { get; init; } = 2;

    /// <summary>Channels of the first upsampling stage (halved at each later stage, at least 16).</summary>
    [JsonPropertyName("base_channels")] public int BaseChannels { get; init; } = 96;

    /// <summary>Checks the sizes and throws naming the first invalid one.</summary>
    public void Validate()
    {
        if (CondTokens <= 0) throw new ArgumentOutOfRangeException(nameof(CondTokens), CondTokens, "cond_tokens must be positive.");
        if (CondDim <= 0) throw new ArgumentOutOfRangeException(nameof(CondDim), CondDim, "cond_dim must be positive.");
        if (GridSize <= 0 || ImageSize < GridSize || ImageSize % GridSize != 0 || !IsPowerOfTwo(ImageSize / GridSize))
            throw new ArgumentOutOfRangeException(nameof(ImageSize), ImageSize, $"image_size must be grid_size ({GridSize}) times a power of two.");
        if (HiddenDim <= 0 || NumHeads <= 0 || HiddenDim % NumHeads != 0)
            throw new ArgumentOutOfRangeException(nameof(HiddenDim), HiddenDim, $"hidden_dim must be a positive multiple of num_heads ({NumHeads}).");
        if (NumLayers <= 0) throw new ArgumentOutOfRangeException(nameof(NumLayers), NumLayers, "num_layers must be positive.");
        if (BaseChannels < 8) throw new ArgumentOutOfRangeException(nameof(BaseChannels), BaseChannels, "base_channels must be at least 8.");
    }

    internal int UpsampleStages => (int)Math.Round(Math.Log2(ImageSize / GridSize));

    private static bool IsPowerOfTwo(int x) => x >= 1 && (x & (x - 1)) == 0;
}

/// <summary>Multi-head attention with separate q/k/v/out projections (no masks).</summary>
internal sealed class DecoderAttention : Module<Tensor, Tensor, Tensor>
{
    private readonly Linear q_proj, k_proj, v_proj, out_proj;
    private readonly int _heads;

    public DecoderAttention(int dim, int kvDim, int heads) : base(nameof(DecoderAttention))
    {
        _heads = heads;
        q_proj = Linear(dim, dim);
        k_proj = Linear(kvDim, dim);
        v_proj = Linear(kvDim, dim);
        out_proj = Linear(dim, dim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor context)
    {
        long b = x.shape[0], t = x.shape[1], s = context.shape[1], d = x.shape[2];
        long hd = d / _heads;
        using var q = q_proj.forward(x).view(b, t, _heads, hd).transpose(1, 2);
        using var k = k_proj.forward(context).view(b, s, _heads, hd).transpose(1, 2);
        using var v = v_proj.forward(context).view(b, s, _heads, hd).transpose(1, 2);
        using var a = functional.scaled_dot_product_attention(q, k, v);
        using var merged = a.transpose(1, 2).reshape(b, t, d);
        return out_proj.forward(merged);
    }
}

/// <summary>Pre-LN block: cross-attention to the text, self-attention among queries, feed-forward.</summary>
internal sealed class DecoderBlock : Module<Tensor, Tensor, Tensor>
{
    private readonly LayerNorm norm_cross, norm_self, norm_ff;
    private readonly DecoderAttention cross_attn, self_attn;
    private readonly Linear fc1, fc2;

    public DecoderBlock(int dim, int condDim, int heads) : base(nameof(DecoderBlock))
    {
        norm_cross = LayerNorm(dim);
        norm_self = LayerNorm(dim);
        norm_ff = LayerNorm(dim);
        cross_attn = new DecoderAttention(dim, condDim, heads);
        self_attn = new DecoderAttention(dim, dim, heads);
        fc1 = Linear(dim, 4 * dim);
        fc2 = Linear(4 * dim, dim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor cond)
    {
        var h = x + cross_attn.forward(norm_cross.forward(x), cond);
        var n = norm_self.forward(h);
        h = h + self_attn.forward(n, n);
        return h + fc2.forward(functional.gelu(fc1.forward(norm_ff.forward(h))));
    }
}

/// <summary>Upsampling stage: nearest ×2, two 3×3 convolutions with GroupNorm and SiLU.</summary>
internal sealed class UpStage : Module<Tensor, Tensor>
{
    private readonly Conv2d conv1, conv2;
    private readonly GroupNorm norm1, norm2;

    public UpStage(int inChannels, int outChannels) : base(nameof(UpStage))
    {
        conv1 = Conv2d(inChannels, outChannels, 3, padding: 1);
        norm1 = InitializedGroupNorm(outChannels);
        conv2 = Conv2d(outChannels, outChannels, 3, padding: 1);
        norm2 = InitializedGroupNorm(outChannels);
        RegisterComponents();
    }

    /// <summary>TorchSharp 0.107's GroupNorm leaves its affine parameters uninitialised (torch.empty); set them to 1 and 0.</summary>
    private static GroupNorm InitializedGroupNorm(int channels)
    {
        var norm = GroupNorm(Math.Min(8, channels), channels);
        using var noGrad = torch.no_grad();
        init.ones_(norm.weight);
        init.zeros_(norm.bias!);
        return norm;
    }

    public override Tensor forward(Tensor x)
    {
        var up = functional.interpolate(x, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest);
        var h = functional.silu(norm1.forward(conv1.forward(up)));
        return functional.silu(norm2.forward(conv2.forward(h)));
    }
}

/// <summary>
/// The shapes world's text-to-image decoder module. Input: text-encoder hidden states [B, L, m]; output: RGB images
/// [B, 3, S, S] in [0, 1].
/// </summary>
internal sealed class TextToImageDecoder : Module<Tensor, Tensor>
{
    private readonly Parameter queries;
    private readonly Linear cond_proj;
    private readonly LayerNorm cond_norm;
    private readonly ModuleList<DecoderBlock> blocks;
    private readonly LayerNorm out_norm;
    private readonly Conv2d stem;
    private readonly ModuleList<UpStage> ups;
    private readonly Conv2d to_rgb;

    public TextToImageDecoderConfig Config { get; }

    public TextToImageDecoder(TextToImageDecoderConfig config) : base(nameof(TextToImageDecoder))
    {
        config.Validate();
        Config = config;
        int d = config.HiddenDim;
        queries = Parameter(torch.randn(1, config.GridSize * config.GridSize, d) * 0.02);
        cond_norm = LayerNorm(config.CondDim);
        cond_proj = Linear(config.CondDim, d);
        blocks = new ModuleList<DecoderBlock>(Enumerable.Range(0, config.NumLayers).Select(_ => new DecoderBlock(d, d, config.NumHeads)).ToArray());
        out_norm = LayerNorm(d);
        stem = Conv2d(d, config.BaseChannels, 1);
        var stages = new List<UpStage>();
        int ch = config.BaseChannels;
        for (int i = 0; i < config.UpsampleStages; i++)
        {
            int next = Math.Max(16, ch / 2);
            stages.Add(new UpStage(ch, next));
            ch = next;
        }
        ups = new ModuleList<UpStage>(stages.ToArray());
        to_rgb = Conv2d(ch, 3, 3, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor cond)
    {
        if (cond.dim() != 3 || cond.shape[1] != Config.CondTokens || cond.shape[2] != Config.CondDim)
            throw new ArgumentException($"Conditioning must have shape [B, {Config.CondTokens}, {Config.CondDim}], got {SafeTensors.FormatShape(cond.shape)}.", nameof(cond));
        long b = cond.shape[0];
        var c = cond_proj.forward(cond_norm.forward(cond));
        var h = queries.expand(b, -1, -1);
        foreach (var block in blocks) h = block.forward(h, c);
        h = out_norm.forward(h);
        int g = Config.GridSize;
        var x = stem.forward(h.transpose(1, 2).reshape(b, Config.HiddenDim, g, g));
        foreach (var up in ups) x = up.forward(x);
        return torch.sigmoid(to_rgb.forward(x));
    }

    /// <summary>Saves config.json and model.safetensors into <paramref name="folder"/> (each written atomically).</summary>
    public void SaveFolder(string folder) => WorldModelFolder.Save(folder, Config, this);

    /// <summary>Loads a decoder saved by <see cref="SaveFolder"/> (eval mode; parameters keep requires_grad).</summary>
    public static TextToImageDecoder LoadFolder(string folder, Device? device = null)
    {
        var config = WorldModelFolder.ReadConfig<TextToImageDecoderConfig>(folder, "gill_world_decoder", c => c.ModelType, "World decoder");
        return WorldModelFolder.LoadWeights(folder, new TextToImageDecoder(config), device, freeze: false);
    }
}
