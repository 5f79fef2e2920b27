using System.Text.Json;
using System.Text.Json.Serialization;
using Gill.ML.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Gill.ML.WorldModels;

/// <summary>Architecture of the shapes world's CNN image tower.</summary>
public sealed record WorldImageEncoderConfig
{
    /// <summary>Marker written to config.json.</summary>
    [JsonPropertyName("model_type")] public string ModelType { get; init; } = "gill_world_image_encoder";

    /// <summary>Input image side (square RGB images in [0, 1]).</summary>
    [JsonPropertyName("image_size")] public int ImageSize { get; init; } = 32;

    /// <summary>Channels of the first stage (doubled at each of the three stride-2 stages).</summary>
    [JsonPropertyName("base_channels")] public int BaseChannels { get; init; } = 32;

    /// <summary>Size of the pooled feature (the feature GILL maps into the LM, as CLIP's pooler_output).</summary>
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; } = 256;

    /// <summary>Size of the projected, contrastive embedding (as CLIP's image_embeds).</summary>
    [JsonPropertyName("projection_dim")] public int ProjectionDim { get; init; } = 128;

    /// <summary>Checks the sizes.</summary>
    public void Validate()
    {
        if (ImageSize < 8 || ImageSize % 8 != 0) throw new ArgumentOutOfRangeException(nameof(ImageSize), ImageSize, "image_size must be a multiple of 8 (at least 8).");
        if (BaseChannels < 4) throw new ArgumentOutOfRangeException(nameof(BaseChannels), BaseChannels, "base_channels must be at least 4.");
        if (HiddenSize <= 0) throw new ArgumentOutOfRangeException(nameof(HiddenSize), HiddenSize, "hidden_size must be positive.");
        if (ProjectionDim <= 0) throw new ArgumentOutOfRangeException(nameof(ProjectionDim), ProjectionDim, "projection_dim must be positive.");
    }
}

/// <summary>
/// The shapes world's image tower: three stride-2 convolution stages, a flatten that keeps where things are (positions
/// matter in the world's captions), a linear layer and a LayerNorm giving the pooled feature, and a bias-free projection
/// to the contrastive space. Input: RGB [B, 3, S, S] in [0, 1] (normalised inside).
/// </summary>
internal sealed class WorldImageEncoder : Module<Tensor, (Tensor Pooled, Tensor Embeds)>
{
    private readonly Sequential features;
    private readonly Linear fc;
    private readonly LayerNorm post_layernorm;
    private readonly Linear visual_projection;

    public WorldImageEncoderConfig Config { get; }

    public WorldImageEncoder(WorldImageEncoderConfig config) : base(nameof(WorldImageEncoder))
    {
        config.Validate();
        Config = config;
        int c = config.BaseChannels;
        features = Sequential(
            Conv2d(3, c, 3, padding: 1), SiLU(), Conv2d(c, c, 3, stride: 2, padding: 1), SiLU(),
            Conv2d(c, 2 * c, 3, padding: 1), SiLU(), Conv2d(2 * c, 2 * c, 3, stride: 2, padding: 1), SiLU(),
            Conv2d(2 * c, 4 * c, 3, padding: 1), SiLU(), Conv2d(4 * c, 4 * c, 3, stride: 2, padding: 1), SiLU());
        int side = config.ImageSize / 8;
        fc = Linear(4 * c * side * side, config.HiddenSize);
        post_layernorm = LayerNorm(config.HiddenSize);
        visual_projection = Linear(config.HiddenSize, config.ProjectionDim, hasBias: false);
        RegisterComponents();
    }

    public override (Tensor Pooled, Tensor Embeds) forward(Tensor images)
    {
        int s = Config.ImageSize;
        if (images.dim() != 4 || images.shape[1] != 3 || images.shape[2] != s || images.shape[3] != s)
            throw new ArgumentException($"World image encoder expects RGB images [B, 3, {s}, {s}] in [0, 1], got {SafeTensors.FormatShape(images.shape)}.", nameof(images));
        var x = features.forward(images * 2 - 1);
        var pooled = post_layernorm.forward(fc.forward(x.flatten(1)));
        return (pooled, visual_projection.forward(pooled));
    }

    public void SaveFolder(string folder) => WorldModelFolder.Save(folder, Config, this);

    public static WorldImageEncoder LoadFolder(string folder, Device? device = null)
    {
        var config = WorldModelFolder.ReadConfig<WorldImageEncoderConfig>(folder, "gill_world_image_encoder", c => c.ModelType, "World image encoder");
        return WorldModelFolder.LoadWeights(folder, new WorldImageEncoder(config), device, freeze: true);
    }
}
