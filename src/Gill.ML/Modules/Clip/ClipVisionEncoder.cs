using Gill.ML.Imaging;
using Gill.ML.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gill.ML.Modules.Clip;

/// <summary>
/// Outputs of the CLIP vision tower for a batch. Two feature spaces are kept apart: <see cref="PooledFeatures"/> (the
/// post-layer-normed class token, hidden-size wide: HF <c>pooler_output</c>, the visual feature GILL trains on) and
/// <see cref="ImageEmbeddings"/> (that vector through <c>visual_projection</c>: HF <c>image_embeds</c>, the space of CLIP
/// image–text similarity). Dispose to release the tensors.
/// </summary>
public sealed class ClipVisionOutput : IDisposable
{
    internal ClipVisionOutput(Tensor last, Tensor pooled, Tensor? embeds, Tensor penultimate, IReadOnlyList<Tensor>? hidden)
    {
        LastHiddenState = last;
        PenultimateHiddenState = penultimate;
        PooledFeatures = pooled;
        ImageEmbeddings = embeds;
        HiddenStates = hidden;
    }

    /// <summary>[B, 1 + patches, hidden]: the last encoder layer's output (not post-layer-normed), HF <c>last_hidden_state</c>.</summary>
    public Tensor LastHiddenState { get; }

    /// <summary>[B, hidden]: post-layer-normed class token, HF <c>pooler_output</c>.</summary>
    public Tensor PooledFeatures { get; }

    /// <summary>[B, projection_dim]: <see cref="PooledFeatures"/> through <c>visual_projection</c>, HF <c>image_embeds</c>
    /// (unnormalised); null when the checkpoint has no projection.</summary>
    public Tensor? ImageEmbeddings { get; }

    /// <summary>HF <c>hidden_states</c> (the pre-layer-normed embeddings, then each layer's output) when they were
    /// asked for, else null.</summary>
    public IReadOnlyList<Tensor>? HiddenStates { get; }

    /// <summary>The second-to-last hidden state, HF <c>hidden_states[-2]</c> [B, 1 + patches, hidden].</summary>
    public Tensor PenultimateHiddenState { get; }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (HiddenStates is not null) foreach (var t in HiddenStates) t.Dispose();
        LastHiddenState.Dispose();
        PenultimateHiddenState.Dispose();
        PooledFeatures.Dispose();
        ImageEmbeddings?.Dispose();
    }
}

/// <summary>
/// The CLIP vision encoder (Hugging Face <c>CLIPVisionModel</c> / <c>CLIPVisionModelWithProjection</c>) with its image
/// preprocessor. Frozen (no gradients, eval mode) unless <see cref="SetTrainable"/> is called; frozen inference runs under
/// <c>no_grad</c>.
/// </summary>
public sealed class ClipVisionEncoder : IDisposable
{
    private readonly ClipRoot _root;
    private readonly ClipVisionTransformer _tower;
    private readonly Linear? _projection;
    private readonly bool _ownsModule;
    private bool _trainable;

    internal ClipVisionEncoder(ClipRoot root, ClipImageProcessor preprocessor, bool ownsModule)
    {
        _root = root;
        _tower = root.Vision ?? throw new ArgumentException("The CLIP module has no vision tower.", nameof(root));
        _projection = root.VisualProjection;
        _ownsModule = ownsModule;
        Preprocessor = preprocessor;
    }

    /// <summary>The tower's configuration.</summary>
    public ClipVisionConfig Config => _tower.Config;

    /// <summary>The image preprocessor (from the folder's preprocessor_config.json, or the defaults for the image size).</summary>
    public ClipImageProcessor Preprocessor { get; }

    /// <summary>Whether <c>visual_projection</c> is present (image embeddings available).</summary>
    public bool HasProjection => _projection is not null;

    /// <summary>Width of <see cref="ClipVisionOutput.PooledFeatures"/>.</summary>
    public int PooledFeatureSize => Config.HiddenSize;

    /// <summary>Width of <see cref="ClipVisionOutput.ImageEmbeddings"/>, or null without projection.</summary>
    public int? EmbeddingSize => _projection is null ? null : (int)_projection.weight!.shape[0];

    /// <summary>The device the parameters are on.</summary>
    public Device Device => _tower.parameters().First().device;

    /// <summary>The parameters' element type.</summary>
    public ScalarType DType => _tower.parameters().First().dtype;

    /// <summary>Whether gradients are enabled (see <see cref="SetTrainable"/>).</summary>
    public bool IsTrainable => _trainable;

    internal ClipRoot Root => _root;

    /// <summary>
    /// Loads a vision encoder from a Hugging Face folder: a vision-only model (<c>model_type</c> "clip_vision_model",
    /// keys <c>vision_model.*</c> and optionally <c>visual_projection.weight</c>) or a full CLIP model ("clip"), whose
    /// text keys are ignored. Key names and shapes are checked strictly.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="InvalidDataException">Unknown model_type, or missing/unexpected/mis-shaped tensors (named).</exception>
    public static ClipVisionEncoder Load(string folder, ClipLoadOptions? options = null)
    {
        options ??= new ClipLoadOptions();
        options.Validate();
        var (json, type, path) = ClipConfigJson.Read(folder);
        ClipVisionConfig config;
        Func<string, bool> inScope;
        switch (type)
        {
            case "clip_vision_model":
                config = ClipVisionConfig.FromJson(json, path);
                inScope = _ => true;
                break;
            case "clip":
                config = ClipConfig.FromJson(json, path).Vision;
                inScope = k => k.StartsWith(ClipCheckpointIO.VisionPrefix, StringComparison.Ordinal) || k == ClipCheckpointIO.VisualProjectionKey;
                break;
            default:
                throw ClipCheckpointIO.UnknownModelType(type, path, "clip_vision_model", "clip");
        }
        using var checkpoint = SafeTensorsCheckpoint.Open(folder);
        bool projection = checkpoint.Contains(ClipCheckpointIO.VisualProjectionKey);
        if (projection)
            config = config with { ProjectionDim = (int)checkpoint.Tensors[ClipCheckpointIO.VisualProjectionKey].Shape[0] };
        var root = new ClipRoot(config, projection, null, false, null);
        try
        {
            ClipCheckpointIO.LoadInto(root, checkpoint, inScope, options);
        }
        catch
        {
            root.Dispose();
            throw;
        }
        return new ClipVisionEncoder(root, ClipImageProcessor.FromFolder(folder, config.ImageSize), ownsModule: true);
    }

    /// <summary>Creates a randomly initialised vision encoder (Hugging Face's initialisation), frozen.</summary>
    /// <param name="config">The tower's configuration.</param>
    /// <param name="withProjection">Whether to add <c>visual_projection</c> (to <see cref="ClipVisionConfig.ProjectionDim"/>).</param>
    /// <param name="options">Device and element type.</param>
    /// <param name="seed">Seeds torch's generator first when given.</param>
    public static ClipVisionEncoder Create(ClipVisionConfig config, bool withProjection = true, ClipLoadOptions? options = null, long? seed = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate("ClipVisionConfig");
        var root = ClipCheckpointIO.Create(() => new ClipRoot(config, withProjection, null, false, null), options ?? new ClipLoadOptions(), seed);
        return new ClipVisionEncoder(root, ClipImageProcessor.ForImageSize(config.ImageSize), ownsModule: true);
    }

    /// <summary>
    /// Saves as a Hugging Face vision-only folder (config.json with model_type "clip_vision_model", model.safetensors,
    /// preprocessor_config.json), readable by <see cref="Load"/> and by transformers.
    /// </summary>
    public void Save(string folder)
    {
        var json = Config.ToJson();
        json["architectures"] = new System.Text.Json.Nodes.JsonArray(HasProjection ? "CLIPVisionModelWithProjection" : "CLIPVisionModel");
        ClipCheckpointIO.Save(_root, folder, json);
        Preprocessor.Save(folder);
    }

    /// <summary>Enables (or disables) gradients and training mode for the tower and its projection.</summary>
    public void SetTrainable(bool trainable)
    {
        ClipCheckpointIO.SetTrainable(_tower, trainable);
        if (_projection is not null) ClipCheckpointIO.SetTrainable(_projection, trainable);
        _trainable = trainable;
    }

    /// <summary>The tower's parameters (for an optimizer after <see cref="SetTrainable"/>).</summary>
    public IEnumerable<Parameter> Parameters() =>
        _projection is null ? _tower.parameters() : _tower.parameters().Concat(_projection.parameters());

    /// <summary>Runs the tower on preprocessed pixels [B, C, S, S] and returns its outputs.</summary>
    /// <param name="pixelValues">Preprocessed pixels (see <see cref="Preprocessor"/>), on any device.</param>
    /// <param name="outputHiddenStates">Also return every layer's state (memory grows with the depth).</param>
    public ClipVisionOutput Forward(Tensor pixelValues, bool outputHiddenStates = false)
    {
        CheckPixels(pixelValues);
        using var noGrad = _trainable ? null : torch.no_grad();
        using var scope = torch.NewDisposeScope();
        using var x = ClipCheckpointIO.ToDevice(pixelValues, Device);
        var o = _tower.Run(x, outputHiddenStates);
        var embeds = _projection?.forward(o.Pooled);
        embeds?.MoveToOuterDisposeScope();
        o.Pooled.MoveToOuterDisposeScope();
        o.LastHiddenState.MoveToOuterDisposeScope();
        o.Penultimate.MoveToOuterDisposeScope();
        if (o.HiddenStates is not null) foreach (var h in o.HiddenStates) h.MoveToOuterDisposeScope();
        return new ClipVisionOutput(o.LastHiddenState, o.Pooled, embeds, o.Penultimate, o.HiddenStates);
    }

    /// <summary>HF <c>pooler_output</c> [B, hidden] for preprocessed pixels: the feature GILL's visual mappings read.</summary>
    public Tensor GetPooledFeatures(Tensor pixelValues)
    {
        using var o = Forward(pixelValues);
        return o.PooledFeatures.alias();
    }

    /// <summary>HF <c>image_embeds</c> [B, projection_dim] (unnormalised) for preprocessed pixels: the CLIP similarity space.</summary>
    /// <exception cref="InvalidOperationException">The checkpoint has no <c>visual_projection</c>.</exception>
    public Tensor GetImageEmbeddings(Tensor pixelValues)
    {
        if (_projection is null)
            throw new InvalidOperationException("This CLIP vision checkpoint has no visual_projection.weight, so it has no image embeddings; use GetPooledFeatures.");
        using var o = Forward(pixelValues);
        return o.ImageEmbeddings!.alias();
    }

    /// <summary>Preprocesses image files (see <see cref="Preprocessor"/>) and returns the pixel tensor on this encoder's device.</summary>
    public Tensor PreprocessFiles(IEnumerable<string> paths) => Preprocessor.PreprocessFiles(paths, DType, Device);

    private void CheckPixels(Tensor pixelValues)
    {
        ArgumentNullException.ThrowIfNull(pixelValues);
        var s = pixelValues.shape;
        if (s.Length != 4 || s[1] != Config.NumChannels || s[2] != Config.ImageSize || s[3] != Config.ImageSize)
            throw new ArgumentException(
                $"pixel_values must have shape [B, {Config.NumChannels}, {Config.ImageSize}, {Config.ImageSize}], got {SafeTensors.FormatShape(s)}.", nameof(pixelValues));
        if (!torch.is_floating_point(pixelValues))
            throw new ArgumentException($"pixel_values must be a floating-point tensor, got {pixelValues.dtype}.", nameof(pixelValues));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_ownsModule) _root.Dispose();
    }
}
