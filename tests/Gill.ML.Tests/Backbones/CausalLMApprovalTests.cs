using System.Runtime.CompilerServices;
using Gill.ML.Modules;
using Gill.ML.Modules.Gpt2;
using Gill.ML.Modules.Opt;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Backbones;

/// <summary>
/// Builds the full-size architectures on the meta device (no memory) and checks the checkpoint keys and shapes the loader
/// expects, in the public Hub layout, against the approved lists of the real checkpoints.
/// </summary>
[TestClass]
public class CausalLMApprovalTests
{
    private static readonly OptConfig Opt125m = new()
    {
        VocabSize = 50272, HiddenSize = 768, FfnDim = 3072, NumHiddenLayers = 12, NumAttentionHeads = 12,
        MaxPositionEmbeddings = 2048, WordEmbedProjDim = 768,
    };

    private static readonly OptConfig Opt6_7b = new()
    {
        VocabSize = 50272, HiddenSize = 4096, FfnDim = 16384, NumHiddenLayers = 32, NumAttentionHeads = 32,
        MaxPositionEmbeddings = 2048, WordEmbedProjDim = 4096,
    };

    private static readonly Gpt2Config Gpt2 = new()
    {
        VocabSize = 50257, NPositions = 1024, NEmbd = 768, NLayer = 12, NHead = 12,
    };

    [TestMethod]
    public void Opt125mCheckpointKeys() => Verify("opt-125m", Opt125m, 125_239_296);

    [TestMethod]
    public void Opt6_7bCheckpointKeys() => Verify("opt-6.7b", Opt6_7b, 6_658_473_984);

    [TestMethod]
    public void Gpt2CheckpointKeys() => Verify("gpt2", Gpt2, 124_439_808);

    private static void Verify(string name, CausalLMConfig config, long expectedParameters)
    {
        var defaultDevice = get_default_device();
        List<string> lines;
        long count;
        using (var model = CausalLM.Build(config, META, ScalarType.Float32))
        {
            Assert.IsTrue(model.parameters().All(p => p.device_type == DeviceType.META), "built on the meta device");
            lines = CausalLM.DescribeHubCheckpoint(model).ToList();
            count = model.parameters().Sum(p => p.numel());
        }
        Assert.AreEqual(defaultDevice.type, get_default_device().type, "the default device is unchanged");
        Assert.AreEqual(expectedParameters, count, $"{name}: parameter count");
        var approved = Path.Combine(ApprovalsDir(), $"{name}.approved.txt");
        var received = Path.Combine(ApprovalsDir(), $"{name}.received.txt");
        var text = string.Join("\n", lines) + "\n";
        if (!File.Exists(approved) || File.ReadAllText(approved).ReplaceLineEndings("\n") != text)
        {
            File.WriteAllText(received, text);
            Assert.Fail($"{name}: checkpoint keys differ from {approved}; the received list is in {received}.");
        }
        if (File.Exists(received)) File.Delete(received);
    }

    private static string ApprovalsDir([CallerFilePath] string thisFile = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(thisFile)!, "..", "Approvals"));
}
