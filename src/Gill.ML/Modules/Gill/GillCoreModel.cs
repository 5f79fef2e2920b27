using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Modules;

/// <summary>
/// GILL's model core: a frozen causal language model (any <see cref="ICausalLM"/>) plus the trainable
/// <see cref="GillHeads"/>. The [IMG] rows E_img behave as if appended to the LM's tied embedding matrix: input
/// embeddings of [IMG] ids come from E_img and logits are h·[W_frozen ; E_img]ᵀ, with the [IMG] ids taken from the
/// config (never assumed to be V + i). Every method here is differentiable; wrap inference calls in
/// <c>torch.no_grad()</c> and a dispose scope.
/// </summary>
public sealed class GillCoreModel : IDisposable
{
    private readonly bool _ownsLanguageModel;
    private readonly long[] _imgIds;
    private readonly bool _imgIdsAreTail;
    private bool _disposed;

    /// <summary>Builds the core over a language model.</summary>
    /// <param name="languageModel">The backbone; it is frozen (requires_grad off, eval mode) here.</param>
    /// <param name="config">GILL architecture (validated).</param>
    /// <param name="heads">Trainable heads to use (built for this LM's width); null creates fresh ones.</param>
    /// <param name="ownsLanguageModel">Whether <see cref="Dispose"/> also disposes the language model.</param>
    /// <param name="seed">Seed for the initial weights of fresh heads.</param>
    public GillCoreModel(ICausalLM languageModel, GillConfig config, GillHeads? heads = null, bool ownsLanguageModel = false, long? seed = null)
    {
        ArgumentNullException.ThrowIfNull(languageModel);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        LanguageModel = languageModel;
        Config = config.Clone();
        _ownsLanguageModel = ownsLanguageModel;
        var info = languageModel.Info;
        var weight = languageModel.InputEmbeddingWeight;
        if (weight.dim() != 2 || weight.shape[1] != info.InputEmbeddingSize)
            throw new ArgumentException($"The language model's input embedding matrix is {SafeTensors.FormatShape(weight.shape)}, expected [V, {info.InputEmbeddingSize}].");
        FrozenVocabSize = (int)weight.shape[0];
        _imgIds = Config.ImgTokenIds.Select(i => (long)i).ToArray();
        VocabSize = Math.Max(FrozenVocabSize, (int)_imgIds.Max() + 1);
        _imgIdsAreTail = _imgIds.Select((id, i) => id == FrozenVocabSize + i).All(b => b);
        PadTokenId = Config.PadTokenId ?? info.PadTokenId
            ?? throw new ArgumentException("Neither the GILL config nor the language model defines pad_token_id.");
        BosTokenId = Config.BosTokenId ?? info.BosTokenId
            ?? throw new ArgumentException("Neither the GILL config nor the language model defines bos_token_id.");
        if (_imgIds.Contains(PadTokenId) || _imgIds.Contains(BosTokenId))
            throw new ArgumentException($"The pad ({PadTokenId}) or BOS ({BosTokenId}) id collides with an [IMG] id.");
        if (PadTokenId < 0 || PadTokenId >= FrozenVocabSize)
            throw new ArgumentException($"pad_token_id {PadTokenId} is outside the language model's vocabulary of {FrozenVocabSize}.");

        languageModel.SetTrainable(false);
        if (languageModel is nn.Module lmModule) lmModule.eval();

        if (heads is null)
        {
            Heads = new GillHeads(Config, info.InputEmbeddingSize, seed);
        }
        else
        {
            if (heads.EmbeddingDim != info.InputEmbeddingSize)
                throw new ArgumentException($"The heads were built for embedding width {heads.EmbeddingDim}, the language model has {info.InputEmbeddingSize}.");
            if (heads.Config.ToJson() != Config.ToJson())
                throw new ArgumentException("The heads were built for a different GILL config.");
            Heads = heads;
        }
        Heads.to(languageModel.Device);
        FrozenEmbeddingMeanNorm = ComputeFrozenMeanNorm(weight);
    }

    /// <summary>The frozen backbone.</summary>
    public ICausalLM LanguageModel { get; }

    /// <summary>The architecture.</summary>
    public GillConfig Config { get; }

    /// <summary>The trainable parts (float32, on the LM's device).</summary>
    public GillHeads Heads { get; }

    /// <summary>Rows of the frozen embedding matrix.</summary>
    public int FrozenVocabSize { get; }

    /// <summary>Width of the logits: max(frozen rows, largest [IMG] id + 1).</summary>
    public int VocabSize { get; }

    /// <summary>Padding id (labels ignore it; sequences are right-padded with it).</summary>
    public int PadTokenId { get; }

    /// <summary>Beginning-of-sequence id.</summary>
    public int BosTokenId { get; }

    /// <summary>[IMG0..r-1] token ids.</summary>
    public IReadOnlyList<int> ImgTokenIds => Config.ImgTokenIds;

    /// <summary>Mean L2 norm of the frozen embedding rows (excluding rows the [IMG] ids replace): E_img's target norm.</summary>
    public double FrozenEmbeddingMeanNorm { get; }

    /// <summary>Device of the model.</summary>
    public Device Device => LanguageModel.Device;

    /// <summary>
    /// Input embeddings for ids [B, T] in the LM's dtype: frozen rows for ordinary ids, E_img rows for [IMG] ids
    /// (differentiable w.r.t. E_img). Ids outside the vocabulary throw.
    /// </summary>
    public Tensor EmbedTokens(Tensor ids)
    {
        if (ids.dim() != 2) throw new ArgumentException($"Token ids must be [B, T], got {SafeTensors.FormatShape(ids.shape)}.");
        using var scope = torch.NewDisposeScope();
        ids = ids.to(ScalarType.Int64).to(Device);
        var (isImg, row) = ImgMask(ids);
        var valid = isImg | (ids.ge(0) & ids.lt(FrozenVocabSize));
        if (!valid.all().item<bool>())
        {
            var bad = ids.masked_select(valid.logical_not())[0].item<long>();
            throw new ArgumentException($"Token id {bad} is neither in the language model's vocabulary (0..{FrozenVocabSize - 1}) nor an [IMG] id.");
        }
        var frozen = LanguageModel.EmbedTokens(ids.MaskedFill(isImg, (long)PadTokenId));
        var img = Heads.ImgTokenEmbeddings.to(frozen.dtype).index_select(0, row.flatten())
            .view(ids.shape[0], ids.shape[1], -1);
        return torch.where(isImg.unsqueeze(-1), img, frozen).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Logits over the extended vocabulary (float32 [.., <see cref="VocabSize"/>]) for final hidden states [.., D]:
    /// h·W_frozenᵀ with the [IMG] columns given by h·E_imgᵀ. Columns that are neither a frozen row nor an [IMG] id are −∞.
    /// </summary>
    public Tensor Logits(Tensor hidden)
    {
        using var scope = torch.NewDisposeScope();
        var w = LanguageModel.InputEmbeddingWeight;
        var frozen = torch.matmul(hidden.to(w.dtype), w.t()).to(ScalarType.Float32);
        var img = torch.matmul(hidden.to(ScalarType.Float32), Heads.ImgTokenEmbeddings.t());
        Tensor logits;
        if (_imgIdsAreTail)
        {
            logits = torch.cat(new[] { frozen, img }, -1);
        }
        else
        {
            if (VocabSize > FrozenVocabSize)
            {
                var shape = frozen.shape.ToArray();
                shape[^1] = VocabSize - FrozenVocabSize;
                frozen = torch.cat(new[] { frozen, torch.full(shape, float.NegativeInfinity, ScalarType.Float32, frozen.device) }, -1);
            }
            var idx = torch.tensor(_imgIds, device: frozen.device);
            logits = frozen.index_copy(frozen.dim() - 1, idx, img);
        }
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>Runs the frozen LM on input embeddings [B, T, D] (no attention mask, positions 0..T−1, as GILL trains) and returns the final hidden states.</summary>
    public Tensor LastHiddenState(Tensor inputsEmbeds)
    {
        var output = LanguageModel.Forward(new CausalLMInput { InputsEmbeds = inputsEmbeds, ComputeLogits = false, OutputHiddenStates = false });
        if (output.HiddenStates is not null) foreach (var t in output.HiddenStates) if (!ReferenceEquals(t, output.LastHiddenState)) t.Dispose();
        output.Logits?.Dispose();
        return output.LastHiddenState;
    }

    /// <summary>W_cap: visual features [B, Dv] → soft visual tokens [B, k, D] (float32).</summary>
    public Tensor VisualTokens(Tensor visualFeatures) => Heads.VisualTokens(visualFeatures.to(Device));

    /// <summary>
    /// The r [IMG] hidden states [B, r, D] (float32) of token sequences <c>[BOS caption [IMG0..r-1] pad…]</c> [B, T]
    /// whose [IMG] group ends at position caption_len − 1 (text-only pass, as GILL's retrieval/generation modes).
    /// </summary>
    public Tensor ImgHiddenStates(Tensor tokenIds, Tensor captionLengths)
    {
        using var scope = torch.NewDisposeScope();
        var ids = tokenIds.to(ScalarType.Int64).to(Device);
        var last = captionLengths.to(ScalarType.Int64).to(Device) - 1;
        CheckImgGroups(ids, last);
        var hidden = LastHiddenState(EmbedTokens(ids));
        return GatherImgStates(hidden, last).MoveToOuterDisposeScope();
    }

    /// <summary>Picks the r states ending at <paramref name="lastPositions"/> [B] from hidden states [B, T, D] → float32 [B, r, D].</summary>
    public Tensor GatherImgStates(Tensor hidden, Tensor lastPositions)
    {
        using var scope = torch.NewDisposeScope();
        long b = hidden.shape[0], d = hidden.shape[2];
        int r = Config.NumTokens;
        var pos = lastPositions.to(ScalarType.Int64).to(hidden.device).unsqueeze(1) - (r - 1)
                  + torch.arange(r, ScalarType.Int64, hidden.device).unsqueeze(0);
        var states = hidden.gather(1, pos.unsqueeze(-1).expand(b, r, d));
        return states.to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>Normalised text-side retrieval embedding t = W_t2i(h[IMG0]) / ‖·‖ → [B, p].</summary>
    public Tensor TextRetrievalEmbedding(Tensor imgHiddenStates)
    {
        using var scope = torch.NewDisposeScope();
        var t = Heads.TextRetrievalProjection(imgHiddenStates.to(Device));
        return (t / t.norm(-1, keepdim: true)).MoveToOuterDisposeScope();
    }

    /// <summary>Normalised image-side retrieval embedding v = W_i2t(feature) / ‖·‖ → [B, p] (not multiplied by exp(logit_scale)).</summary>
    public Tensor ImageRetrievalEmbedding(Tensor visualFeatures)
    {
        using var scope = torch.NewDisposeScope();
        var v = Heads.ImageRetrievalProjection(visualFeatures.to(Device));
        return (v / v.norm(-1, keepdim: true)).MoveToOuterDisposeScope();
    }

    /// <summary>The generation embedding f_ω(h[IMG] + E_img) → [B, L, out] (Stable Diffusion prompt embeddings at full size).</summary>
    public Tensor GenerationEmbedding(Tensor imgHiddenStates)
    {
        if (imgHiddenStates.dim() != 3 || imgHiddenStates.shape[1] != Config.NumTokens)
            throw new ArgumentException($"[IMG] hidden states must be [B, {Config.NumTokens}, D], got {SafeTensors.FormatShape(imgHiddenStates.shape)}.");
        using var scope = torch.NewDisposeScope();
        var h = imgHiddenStates.to(Device);
        var e = Heads.ImgTokenEmbeddings.unsqueeze(0).expand(h.shape[0], -1, -1);
        return Heads.MapGeneration(h, e).MoveToOuterDisposeScope();
    }

    /// <summary>Rescales the E_img rows to <see cref="FrozenEmbeddingMeanNorm"/> (GILL does this after each optimizer step).</summary>
    public void RenormalizeImgTokenEmbeddings() => Heads.RenormalizeImgTokenEmbeddings(FrozenEmbeddingMeanNorm);

    /// <summary>Saves the trainable weights (<c>model.safetensors</c>) and the config (<c>model_args.json</c>) into a folder.</summary>
    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        Config.Save(Path.Combine(directory, "model_args.json"));
        GillWeights.Save(Heads, Path.Combine(directory, "model.safetensors"));
    }

    /// <summary>
    /// Builds a core over <paramref name="languageModel"/> from a folder holding <c>model_args.json</c> and
    /// <c>model.safetensors</c> (this library's layout or a converted original checkpoint).
    /// </summary>
    public static GillCoreModel Load(ICausalLM languageModel, string directory, bool ownsLanguageModel = false)
    {
        var config = GillConfig.Load(Path.Combine(directory, "model_args.json"));
        var heads = new GillHeads(config, languageModel.Info.InputEmbeddingSize);
        try
        {
            GillWeights.Load(heads, Path.Combine(directory, "model.safetensors"));
            return new GillCoreModel(languageModel, config, heads, ownsLanguageModel);
        }
        catch
        {
            heads.Dispose();
            throw;
        }
    }

    /// <summary>Which positions hold [IMG] ids, and which E_img row each maps to (0 elsewhere).</summary>
    internal (Tensor IsImg, Tensor Row) ImgMask(Tensor ids)
    {
        var isImg = torch.zeros_like(ids, ScalarType.Bool);
        var row = torch.zeros_like(ids);
        for (int i = 0; i < _imgIds.Length; i++)
        {
            var eq = ids.eq(_imgIds[i]);
            isImg = isImg | eq;
            row = row + eq.to(ScalarType.Int64) * i;
        }
        return (isImg, row);
    }

    /// <summary>Throws unless positions last−r+1..last of every row hold [IMG0..r-1] in order.</summary>
    internal void CheckImgGroups(Tensor ids, Tensor last)
    {
        var lastArr = last.cpu().data<long>().ToArray();
        int r = Config.NumTokens;
        long t = ids.shape[1];
        using var cpuIds = ids.cpu().contiguous();
        var flat = cpuIds.data<long>().ToArray();
        for (int b = 0; b < lastArr.Length; b++)
        {
            long end = lastArr[b];
            if (end - (r - 1) < 0 || end >= t)
                throw new ArgumentException($"Row {b}: caption_len {end + 1} does not leave room for {r} [IMG] tokens in a sequence of length {t}.");
            for (int i = 0; i < r; i++)
            {
                long id = flat[b * t + end - (r - 1) + i];
                if (id != _imgIds[i])
                    throw new ArgumentException($"Row {b}: position {end - (r - 1) + i} holds id {id}, expected [IMG{i}] = {_imgIds[i]} (the [IMG] group must end at caption_len − 1).");
            }
        }
    }

    private double ComputeFrozenMeanNorm(Tensor weight)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var norms = weight.to(ScalarType.Float64).norm(1, p: 2);
        var (isImg, _) = ImgMask(torch.arange(FrozenVocabSize, ScalarType.Int64, norms.device));
        return norms.masked_select(isImg.logical_not()).mean().item<double>();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Heads.Dispose();
        if (_ownsLanguageModel) LanguageModel.Dispose();
    }
}
