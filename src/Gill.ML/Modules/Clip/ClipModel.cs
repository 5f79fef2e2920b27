using Gill.ML.Imaging;
using Gill.ML.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gill.ML.Modules.Clip;

/// <summary>Outputs of <see cref="ClipModel.Forward"/>. Dispose to release the tensors.</summary>
public sealed class ClipModelOutput : IDisposable
{
    internal ClipModelOutput(Tensor image, Tensor text, Tensor perImage, Tensor perText, Tensor loss)
    {
        ImageEmbeddings = image;
        TextEmbeddings = text;
        LogitsPerImage = perImage;
        LogitsPerText = perText;
        Loss = loss;
    }

    /// <summary>[B, projection_dim], L2-normalised projected image embeddings.</summary>
    public Tensor ImageEmbeddings { get; }
    /// <summary>[B, projection_dim], L2-normalised projected text embeddings.</summary>
    public Tensor TextEmbeddings { get; }
    /// <summary>[B_image, B_text] = exp(logit_scale) · image · textᵀ.</summary>
    public Tensor LogitsPerImage { get; }
    /// <summary>[B_text, B_image], the transpose of <see cref="LogitsPerImage"/>.</summary>
    public Tensor LogitsPerText { get; }
    /// <summary>
    /// Scalar symmetric contrastive loss (mean of the cross-entropies over <see cref="LogitsPerText"/> and
    /// <see cref="LogitsPerImage"/> with the diagonal as targets), as Hugging Face's <c>clip_loss</c>; requires equal batch sizes.
    /// </summary>
    public Tensor Loss { get; }

    /// <inheritdoc/>
    public void Dispose()
    {
        ImageEmbeddings.Dispose();
        TextEmbeddings.Dispose();
        LogitsPerImage.Dispose();
        LogitsPerText.Dispose();
        Loss.Dispose();
    }
}

/// <summary>
/// A full CLIP model (Hugging Face <c>CLIPModel</c>): vision and text towers, both projections and the learned
/// <c>logit_scale</c>, with Hugging Face key names. It can be created at random, trained (<see cref="SetTrainable"/>),
/// saved as a Hugging Face folder and loaded back; <see cref="ClipVisionEncoder.Load"/> and
/// <see cref="ClipTextEncoder.Load"/> read each tower from its folder. Frozen by default.
/// </summary>
public sealed class ClipModel : IDisposable
{
    private readonly ClipRoot _root;

    private ClipModel(ClipRoot root, ClipConfig config, ClipImageProcessor preprocessor)
    {
        _root = root;
        Config = config;
        Vision = new ClipVisionEncoder(root, preprocessor, ownsModule: false);
        Text = new ClipTextEncoder(root, ownsModule: false);
    }

    /// <summary>The configuration.</summary>
    public ClipConfig Config { get; }

    /// <summary>The vision tower and <c>visual_projection</c> (shares this model's parameters; owned by this model).</summary>
    public ClipVisionEncoder Vision { get; }

    /// <summary>The text tower and <c>text_projection</c> (shares this model's parameters; owned by this model).</summary>
    public ClipTextEncoder Text { get; }

    /// <summary>The learned log temperature (a scalar parameter).</summary>
    public Parameter LogitScale => _root.LogitScale!;

    /// <summary>The device the parameters are on.</summary>
    public Device Device => LogitScale.device;

    /// <summary>Whether gradients are enabled.</summary>
    public bool IsTrainable { get; private set; }

    internal nn.Module Module => _root;

    /// <summary>Creates a randomly initialised CLIP model (Hugging Face's initialisation), frozen.</summary>
    /// <param name="config">Both towers, the projection size and the initial logit scale.</param>
    /// <param name="options">Device and element type.</param>
    /// <param name="seed">Seeds torch's generator first when given.</param>
    public static ClipModel Create(ClipConfig config, ClipLoadOptions? options = null, long? seed = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Vision.Validate("ClipConfig.Vision");
        config.Text.Validate("ClipConfig.Text");
        if (config.ProjectionDim <= 0) throw new ArgumentException($"ClipConfig.ProjectionDim must be positive, got {config.ProjectionDim}.", nameof(config));
        var normalized = Normalize(config);
        var root = ClipCheckpointIO.Create(() => Build(normalized), options ?? new ClipLoadOptions(), seed);
        return new ClipModel(root, normalized, ClipImageProcessor.ForImageSize(config.Vision.ImageSize));
    }

    /// <summary>Loads a full CLIP model folder (<c>model_type</c> "clip"), checking every key and shape strictly.</summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="InvalidDataException">Unknown model_type, or missing/unexpected/mis-shaped tensors (named).</exception>
    public static ClipModel Load(string folder, ClipLoadOptions? options = null)
    {
        options ??= new ClipLoadOptions();
        options.Validate();
        var (json, type, path) = ClipConfigJson.Read(folder);
        if (type != "clip") throw ClipCheckpointIO.UnknownModelType(type, path, "clip");
        var config = ClipConfig.FromJson(json, path);
        using var checkpoint = SafeTensorsCheckpoint.Open(folder);
        var root = Build(config);
        try
        {
            ClipCheckpointIO.LoadInto(root, checkpoint, _ => true, options);
        }
        catch
        {
            root.Dispose();
            throw;
        }
        return new ClipModel(root, config, ClipImageProcessor.FromFolder(folder, config.Vision.ImageSize));
    }

    /// <summary>
    /// Saves as a Hugging Face CLIPModel folder (config.json with model_type "clip", model.safetensors including the
    /// <c>position_ids</c> buffers of the published layout, preprocessor_config.json), each file written atomically.
    /// </summary>
    public void Save(string folder)
    {
        ClipCheckpointIO.Save(_root, folder, Config.ToJson());
        Vision.Preprocessor.Save(folder);
    }

    /// <summary>Enables (or disables) gradients and training mode for every parameter, <c>logit_scale</c> included.</summary>
    public void SetTrainable(bool trainable)
    {
        Vision.SetTrainable(trainable);
        Text.SetTrainable(trainable);
        LogitScale.requires_grad = trainable;
        IsTrainable = trainable;
    }

    /// <summary>All parameters (for an optimizer).</summary>
    public IEnumerable<Parameter> Parameters() => _root.parameters();

    /// <summary>
    /// Contrastive forward pass as Hugging Face's <c>CLIPModel.forward</c>: projected, normalised embeddings, the logits
    /// scaled by exp(logit_scale) and the symmetric cross-entropy loss over matching pairs (row i of the images with row
    /// i of the texts). Gradients flow when the model is trainable.
    /// </summary>
    public ClipModelOutput Forward(Tensor pixelValues, Tensor inputIds, Tensor? attentionMask = null)
    {
        ArgumentNullException.ThrowIfNull(pixelValues);
        ArgumentNullException.ThrowIfNull(inputIds);
        if (pixelValues.shape[0] != inputIds.shape[0])
            throw new ArgumentException($"The batch sizes differ: {pixelValues.shape[0]} images, {inputIds.shape[0]} texts.", nameof(inputIds));
        using var noGrad = IsTrainable ? null : torch.no_grad();
        using var scope = torch.NewDisposeScope();
        using var v = Vision.Forward(pixelValues);
        using var t = Text.Forward(inputIds, attentionMask);
        var img = nn.functional.normalize(v.ImageEmbeddings!, p: 2, dim: -1);
        var txt = nn.functional.normalize(t.TextEmbeddings!, p: 2, dim: -1);
        var perText = torch.matmul(txt, img.t()) * LogitScale.exp().to(txt.dtype);
        var perImage = perText.t();
        var targets = torch.arange(perText.shape[0], dtype: ScalarType.Int64, device: perText.device);
        var loss = (nn.functional.cross_entropy(perText, targets) + nn.functional.cross_entropy(perImage, targets)) / 2.0;
        return new ClipModelOutput(img.MoveToOuterDisposeScope(), txt.MoveToOuterDisposeScope(),
            perImage.MoveToOuterDisposeScope(), perText.MoveToOuterDisposeScope(), loss.MoveToOuterDisposeScope());
    }

    /// <summary>Every checkpoint tensor as <c>key [shape]</c> lines, sorted (approval files).</summary>
    internal IEnumerable<string> DescribeCheckpoint() => _root.DescribeCheckpoint();

    /// <summary>Builds the module for a configuration without initialising or loading it (any default device, e.g. meta).</summary>
    internal static IEnumerable<string> DescribeCheckpoint(ClipConfig config)
    {
        using var root = Build(Normalize(config));
        return root.DescribeCheckpoint().ToList();
    }

    private static ClipConfig Normalize(ClipConfig c) => c with
    {
        Vision = c.Vision with { ProjectionDim = c.ProjectionDim },
        Text = c.Text with { ProjectionDim = c.ProjectionDim },
    };

    private static ClipRoot Build(ClipConfig c) =>
        new(c.Vision, true, c.Text, true, c.LogitScaleInitValue, c.ProjectionDim);

    /// <inheritdoc/>
    public void Dispose() => _root.Dispose();
}
