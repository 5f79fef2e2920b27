using Gill.ML.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gill.ML.Modules.Clip;

/// <summary>Outputs of the CLIP text tower for a batch. Dispose to release the tensors.</summary>
public sealed class ClipTextOutput : IDisposable
{
    internal ClipTextOutput(Tensor last, Tensor pooled, Tensor? embeds, Tensor penultimate, IReadOnlyList<Tensor>? hidden)
    {
        LastHiddenState = last;
        PenultimateHiddenState = penultimate;
        PooledOutput = pooled;
        TextEmbeddings = embeds;
        HiddenStates = hidden;
    }

    /// <summary>[B, T, hidden]: the final-layer-normed states, HF <c>last_hidden_state</c> (Stable Diffusion's conditioning).</summary>
    public Tensor LastHiddenState { get; }

    /// <summary>[B, hidden]: <see cref="LastHiddenState"/> at each sequence's end-of-text position, HF <c>pooler_output</c>.</summary>
    public Tensor PooledOutput { get; }

    /// <summary>[B, projection_dim]: <see cref="PooledOutput"/> through <c>text_projection</c>, HF <c>text_embeds</c>
    /// (unnormalised); null when the checkpoint has no projection (e.g. Stable Diffusion's text_encoder).</summary>
    public Tensor? TextEmbeddings { get; }

    /// <summary>HF <c>hidden_states</c> (the embeddings, then each layer's output, the last one before final_layer_norm)
    /// when they were asked for, else null.</summary>
    public IReadOnlyList<Tensor>? HiddenStates { get; }

    /// <summary>HF <c>hidden_states[-2]</c> [B, T, hidden]: the second-to-last layer's output, not layer-normed.</summary>
    public Tensor PenultimateHiddenState { get; }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (HiddenStates is not null) foreach (var t in HiddenStates) t.Dispose();
        LastHiddenState.Dispose();
        PenultimateHiddenState.Dispose();
        PooledOutput.Dispose();
        TextEmbeddings?.Dispose();
    }
}

/// <summary>
/// The CLIP text encoder (Hugging Face <c>CLIPTextModel</c> / <c>CLIPTextModelWithProjection</c>), loadable from a text-only
/// folder, a Stable Diffusion <c>text_encoder/</c> folder or a full CLIP model. Frozen unless <see cref="SetTrainable"/>
/// is called; frozen inference runs under <c>no_grad</c>.
/// </summary>
public sealed class ClipTextEncoder : IDisposable
{
    private readonly ClipRoot _root;
    private readonly ClipTextTransformer _tower;
    private readonly Linear? _projection;
    private readonly bool _ownsModule;
    private bool _trainable;

    internal ClipTextEncoder(ClipRoot root, bool ownsModule)
    {
        _root = root;
        _tower = root.Text ?? throw new ArgumentException("The CLIP module has no text tower.", nameof(root));
        _projection = root.TextProjection;
        _ownsModule = ownsModule;
    }

    /// <summary>The tower's configuration.</summary>
    public ClipTextConfig Config => _tower.Config;

    /// <summary>Whether <c>text_projection</c> is present (text embeddings available).</summary>
    public bool HasProjection => _projection is not null;

    /// <summary>Width of <see cref="ClipTextOutput.TextEmbeddings"/>, or null without projection.</summary>
    public int? EmbeddingSize => _projection is null ? null : (int)_projection.weight!.shape[0];

    /// <summary>The device the parameters are on.</summary>
    public Device Device => _tower.parameters().First().device;

    /// <summary>The parameters' element type.</summary>
    public ScalarType DType => _tower.parameters().First().dtype;

    /// <summary>Whether gradients are enabled (see <see cref="SetTrainable"/>).</summary>
    public bool IsTrainable => _trainable;

    internal ClipRoot Root => _root;

    /// <summary>
    /// Loads a text encoder from a Hugging Face folder: a text-only model (<c>model_type</c> "clip_text_model", as in
    /// Stable Diffusion's <c>text_encoder/</c>; keys <c>text_model.*</c> and optionally <c>text_projection.weight</c>)
    /// or a full CLIP model ("clip"), whose vision keys are ignored. Key names and shapes are checked strictly.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="InvalidDataException">Unknown model_type, or missing/unexpected/mis-shaped tensors (named).</exception>
    public static ClipTextEncoder Load(string folder, ClipLoadOptions? options = null)
    {
        options ??= new ClipLoadOptions();
        options.Validate();
        var (json, type, path) = ClipConfigJson.Read(folder);
        ClipTextConfig config;
        Func<string, bool> inScope;
        switch (type)
        {
            case "clip_text_model":
                config = ClipTextConfig.FromJson(json, path);
                inScope = _ => true;
                break;
            case "clip":
                config = ClipConfig.FromJson(json, path).Text;
                inScope = k => k.StartsWith(ClipCheckpointIO.TextPrefix, StringComparison.Ordinal) || k == ClipCheckpointIO.TextProjectionKey;
                break;
            default:
                throw ClipCheckpointIO.UnknownModelType(type, path, "clip_text_model", "clip");
        }
        using var checkpoint = SafeTensorsCheckpoint.Open(folder);
        bool projection = checkpoint.Contains(ClipCheckpointIO.TextProjectionKey);
        if (projection)
            config = config with { ProjectionDim = (int)checkpoint.Tensors[ClipCheckpointIO.TextProjectionKey].Shape[0] };
        var root = new ClipRoot(null, false, config, projection, null);
        try
        {
            ClipCheckpointIO.LoadInto(root, checkpoint, inScope, options);
        }
        catch
        {
            root.Dispose();
            throw;
        }
        return new ClipTextEncoder(root, ownsModule: true);
    }

    /// <summary>Creates a randomly initialised text encoder (Hugging Face's initialisation), frozen.</summary>
    public static ClipTextEncoder Create(ClipTextConfig config, bool withProjection = true, ClipLoadOptions? options = null, long? seed = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate("ClipTextConfig");
        var root = ClipCheckpointIO.Create(() => new ClipRoot(null, false, config, withProjection, null), options ?? new ClipLoadOptions(), seed);
        return new ClipTextEncoder(root, ownsModule: true);
    }

    /// <summary>Saves as a Hugging Face text-only folder (config.json with model_type "clip_text_model", model.safetensors).</summary>
    public void Save(string folder)
    {
        var json = Config.ToJson();
        json["architectures"] = new System.Text.Json.Nodes.JsonArray(HasProjection ? "CLIPTextModelWithProjection" : "CLIPTextModel");
        ClipCheckpointIO.Save(_root, folder, json);
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

    /// <summary>
    /// Runs the tower on token ids [B, T] (T ≤ max_position_embeddings; int64 or int32). Sequences must contain the
    /// end-of-text token, where the pooled output is read. <paramref name="attentionMask"/> ([B, T], 1 = attend) is
    /// optional; Stable Diffusion passes none and pads with the end-of-text token.
    /// </summary>
    /// <param name="inputIds">Token ids [B, T].</param>
    /// <param name="attentionMask">Optional [B, T] mask, 1 where a token may be attended to.</param>
    /// <param name="outputHiddenStates">Also return every layer's state.</param>
    public ClipTextOutput Forward(Tensor inputIds, Tensor? attentionMask = null, bool outputHiddenStates = false)
    {
        CheckIds(inputIds, attentionMask);
        using var noGrad = _trainable ? null : torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var device = Device;
        var ids = ClipCheckpointIO.ToDevice(inputIds, device).to(ScalarType.Int64);
        var mask = attentionMask is null ? null : ClipCheckpointIO.ToDevice(attentionMask, device);
        var o = _tower.Run(ids, mask, outputHiddenStates);
        var embeds = _projection?.forward(o.Pooled);
        embeds?.MoveToOuterDisposeScope();
        o.Pooled.MoveToOuterDisposeScope();
        o.LastHiddenState.MoveToOuterDisposeScope();
        o.Penultimate.MoveToOuterDisposeScope();
        if (o.HiddenStates is not null) foreach (var h in o.HiddenStates) h.MoveToOuterDisposeScope();
        return new ClipTextOutput(o.LastHiddenState, o.Pooled, embeds, o.Penultimate, o.HiddenStates);
    }

    /// <summary>HF <c>last_hidden_state</c> [B, T, hidden] (what Stable Diffusion conditions on).</summary>
    public Tensor GetLastHiddenState(Tensor inputIds, Tensor? attentionMask = null)
    {
        using var o = Forward(inputIds, attentionMask);
        return o.LastHiddenState.alias();
    }

    /// <summary>HF <c>text_embeds</c> [B, projection_dim] (unnormalised): the CLIP similarity space.</summary>
    /// <exception cref="InvalidOperationException">The checkpoint has no <c>text_projection</c>.</exception>
    public Tensor GetTextEmbeddings(Tensor inputIds, Tensor? attentionMask = null)
    {
        if (_projection is null)
            throw new InvalidOperationException("This CLIP text checkpoint has no text_projection.weight, so it has no text embeddings.");
        using var o = Forward(inputIds, attentionMask);
        return o.TextEmbeddings!.alias();
    }

    private void CheckIds(Tensor inputIds, Tensor? attentionMask)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        var s = inputIds.shape;
        if (s.Length != 2 || s[0] < 1 || s[1] < 1 || s[1] > Config.MaxPositionEmbeddings)
            throw new ArgumentException(
                $"input_ids must have shape [B, T] with 1 ≤ T ≤ {Config.MaxPositionEmbeddings} (max_position_embeddings), got {SafeTensors.FormatShape(s)}.", nameof(inputIds));
        if (inputIds.dtype is not (ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Byte or ScalarType.Int8))
            throw new ArgumentException($"input_ids must be an integer tensor, got {inputIds.dtype}.", nameof(inputIds));
        long min, max;
        using (var scope = torch.NewDisposeScope())
        {
            min = inputIds.min().to(ScalarType.Int64).item<long>();
            max = inputIds.max().to(ScalarType.Int64).item<long>();
        }
        if (min < 0 || max >= Config.VocabSize)
            throw new ArgumentException($"input_ids hold values in [{min}, {max}], outside the vocabulary [0, {Config.VocabSize - 1}].", nameof(inputIds));
        if (attentionMask is not null && !attentionMask.shape.SequenceEqual(s))
            throw new ArgumentException(
                $"attention_mask must have the shape of input_ids {SafeTensors.FormatShape(s)}, got {SafeTensors.FormatShape(attentionMask.shape)}.", nameof(attentionMask));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_ownsModule) _root.Dispose();
    }
}
