using System.Text.Json.Serialization;
using Gill.ML.Modules;
using Gill.ML.Persistence;
using Gill.ML.Serialization;
using Gill.ML.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Stages;

/// <summary>A reference-counted lease on a backbone; the backbone is disposed with the last lease only when owned.</summary>
internal sealed class BackboneLease
{
    private int _refs = 1;

    public BackboneLease(GillLanguageBackbone backbone, bool owned)
    {
        Backbone = backbone;
        Owned = owned;
    }

    public GillLanguageBackbone Backbone { get; }

    public bool Owned { get; }

    public BackboneLease AddRef()
    {
        Interlocked.Increment(ref _refs);
        return this;
    }

    public void Release()
    {
        if (Interlocked.Decrement(ref _refs) == 0 && Owned) Backbone.Dispose();
    }
}

/// <summary>
/// The trained state that GILL's stage transformers share: the backbone lease, the core (trainable heads over the frozen
/// LM), the optional decision classifier, the maximum sequence length and the fit seed. Reference-counted: each stage
/// transformer holds one reference.
/// </summary>
internal sealed class GillParts
{
    private int _refs = 1;
    private readonly BackboneLease _lease;

    public GillParts(BackboneLease lease, GillCoreModel core, int maxSequenceLength, int seed, GillDecisionClassifier? decision = null)
    {
        _lease = lease;
        Core = core;
        MaxSequenceLength = maxSequenceLength;
        Seed = seed;
        Decision = decision;
    }

    /// <summary>Fresh heads (seeded) over a caller-owned or leased backbone.</summary>
    public static GillParts Create(BackboneLease lease, GillConfig architecture, int maxSequenceLength, int seed)
    {
        var config = lease.Backbone.Configure(architecture);
        // Initialisation temporaries die with this scope; GillHeads detaches its parameters from it.
        using var scope = torch.NewDisposeScope();
        var core = new GillCoreModel(lease.Backbone.LanguageModel, config, seed: seed);
        return new GillParts(lease, core, maxSequenceLength, seed);
    }

    public GillLanguageBackbone Backbone => _lease.Backbone;

    public GillCoreModel Core { get; }

    public GillConfig Config => Core.Config;

    public GillDecisionClassifier? Decision { get; set; }

    public int MaxSequenceLength { get; }

    public int Seed { get; }

    public GillParts AddRef()
    {
        Interlocked.Increment(ref _refs);
        return this;
    }

    public void Release()
    {
        if (Interlocked.Decrement(ref _refs) != 0) return;
        Core.Dispose();
        Decision?.Dispose();
        _lease.Release();
    }

    /// <summary>A deep copy of the trainable state (same backbone lease), for a later stage to train on.</summary>
    public GillParts Clone(int seed)
    {
        using var scope = torch.NewDisposeScope();
        var heads = new GillHeads(Config, Backbone.EmbeddingSize);
        using (torch.no_grad())
        {
            var src = Core.Heads.state_dict();
            foreach (var (k, v) in heads.state_dict()) v.copy_(src[k]);
        }
        var core = new GillCoreModel(Backbone.LanguageModel, Config, heads);
        GillDecisionClassifier? decision = null;
        if (Decision is not null)
        {
            var tmp = Path.Combine(Path.GetTempPath(), "gill-decision-" + Guid.NewGuid().ToString("N") + ".safetensors");
            try
            {
                Decision.Save(tmp);
                decision = new GillDecisionClassifier(Decision.Kind, Decision.HiddenDim);
                decision.Load(tmp);
                decision.To(Backbone.Device);
            }
            finally
            {
                try { File.Delete(tmp); } catch (IOException) { }
            }
        }
        return new GillParts(_lease.AddRef(), core, MaxSequenceLength, seed, decision);
    }

    /// <summary>
    /// Token sequences <c>[BOS caption [IMG0..r-1] pad…]</c> of length <see cref="MaxSequenceLength"/> for captions, as
    /// a [B, T] int64 tensor and caption lengths [B] (in the current dispose scope, on the CPU).
    /// </summary>
    public (Tensor Ids, Tensor Lengths) Sequences(IReadOnlyList<string> captions, IReadOnlyList<long> rows, string stage, string column)
    {
        var (ids, lens) = SequenceArrays(captions, rows, stage, column);
        int t = MaxSequenceLength;
        return (torch.tensor(ids.SelectMany(s => s).ToArray(), new long[] { captions.Count, t }), torch.tensor(lens));
    }

    public (long[][] Ids, long[] Lengths) SequenceArrays(IReadOnlyList<string> captions, IReadOnlyList<long> rows, string stage, string column)
    {
        var ids = new long[captions.Count][];
        var lens = new long[captions.Count];
        for (int i = 0; i < captions.Count; i++)
        {
            var caption = Backbone.EncodeCaption(captions[i], MaxSequenceLength, stage, column, rows[i]);
            (ids[i], lens[i]) = GillSequences.Build(caption, MaxSequenceLength, Config.BosTokenId!.Value, Config.PadTokenId!.Value, Config.ImgTokenIds);
        }
        return (ids, lens);
    }

    /// <summary>[IMG] hidden states [B, r, D] (float32) of captions (text-only pass; no_grad is the caller's).</summary>
    public Tensor ImgHiddenStates(IReadOnlyList<string> captions, IReadOnlyList<long> rows, string stage, string column)
    {
        var (ids, lens) = Sequences(captions, rows, stage, column);
        return Core.ImgHiddenStates(ids, lens);
    }

    private sealed record Saved(
        [property: JsonPropertyName("config")] string Config,
        [property: JsonPropertyName("maxSequenceLength")] int MaxSequenceLength,
        [property: JsonPropertyName("languageModelDType")] ScalarType LanguageModelDType,
        [property: JsonPropertyName("decisionKind")] GillDecisionKind? DecisionKind);

    private const string DecisionFile = "decision.safetensors";

    public void WriteTo(GillModelWriter writer)
    {
        writer.Seed = Seed;
        writer.SetOptions("gill", new Saved(Config.ToJson(), MaxSequenceLength, Backbone.DType, Decision?.Kind));
        Backbone.WriteTo(writer);
        writer.WriteWeights(Core.Heads.state_dict().Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value)),
            new Dictionary<string, string> { ["format"] = "pt", ["gill_layout"] = "gill-heads-v1" });
        if (Decision is not null)
        {
            var tmp = Path.Combine(Path.GetTempPath(), "gill-decision-" + Guid.NewGuid().ToString("N") + ".safetensors");
            try
            {
                Decision.Save(tmp);
                writer.WriteFile(DecisionFile, File.ReadAllBytes(tmp));
            }
            finally
            {
                try { File.Delete(tmp); } catch (IOException) { }
            }
        }
    }

    public static GillParts LoadFrom(GillModelReader reader)
    {
        var saved = reader.GetOptions<Saved>("gill");
        var config = GillConfig.FromJson(saved.Config);
        var backbone = GillLanguageBackbone.LoadFrom(reader, saved.LanguageModelDType);
        var lease = new BackboneLease(backbone, owned: true);
        GillHeads? heads = null;
        GillDecisionClassifier? decision = null;
        try
        {
            if (!config.ImgTokenIds.SequenceEqual(backbone.ImgTokenIds))
                throw new InvalidDataException($"{reader.StageFolder}: the saved [IMG] ids [{string.Join(", ", config.ImgTokenIds)}] differ from the tokenizer's [{string.Join(", ", backbone.ImgTokenIds)}].");
            heads = new GillHeads(config, backbone.EmbeddingSize);
            if (!reader.HasWeights) throw new InvalidDataException($"{reader.StageFolder}: the stage has no weights.safetensors.");
            using (var checkpoint = SafeTensorsCheckpoint.Open(reader.OpenWeights().Path))
                GillWeights.Load(heads, checkpoint);
            var core = new GillCoreModel(backbone.LanguageModel, config, heads);
            if (saved.DecisionKind is { } kind)
            {
                var tmp = Path.Combine(Path.GetTempPath(), "gill-decision-" + Guid.NewGuid().ToString("N") + ".safetensors");
                try
                {
                    File.WriteAllBytes(tmp, reader.ReadFile(DecisionFile));
                    decision = new GillDecisionClassifier(kind, backbone.EmbeddingSize);
                    decision.Load(tmp);
                    decision.To(backbone.Device);
                }
                finally
                {
                    try { File.Delete(tmp); } catch (IOException) { }
                }
            }
            return new GillParts(lease, core, saved.MaxSequenceLength, reader.Seed ?? 0, decision);
        }
        catch
        {
            heads?.Dispose();
            decision?.Dispose();
            lease.Release();
            throw;
        }
    }
}
